"""Search signals and costs: named scalar series, structured events, proxies on architectures, run kinds.

- ``series_points``: named scalars over steps (GDAS tau and entropy, PC-DARTS betas, TE-NAS kappa and
  region count per pruning round ...), one row per (step, name).
- ``events``: structured records (a TE-NAS pruning decision) with a JSON body.
- ``architectures.ntk_cond`` / ``linear_regions``: training-free proxies, when computed.
- ``experiments.kind`` ("search" or "proxies": a background proxy evaluation uses the same queue, worker,
  progress, log and cancel as a search) and ``search_seconds`` / ``train_seconds`` (search cost).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _child(table: str, *columns: sa.Column) -> None:
    op.create_table(
        table,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        *columns,
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name=f"fk_{table}_experiment_id_experiments", ondelete="CASCADE"
        ),
    )
    op.create_index(f"ix_{table}_experiment_id", table, ["experiment_id"])


def upgrade() -> None:
    _child(
        "series_points",
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
    )
    _child(
        "events",
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("architectures") as batch:
        batch.add_column(sa.Column("ntk_cond", sa.Float(), nullable=True))
        batch.add_column(sa.Column("linear_regions", sa.Float(), nullable=True))
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="search"))
        batch.add_column(sa.Column("search_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("train_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("train_seconds")
        batch.drop_column("search_seconds")
        batch.drop_column("kind")
    with op.batch_alter_table("architectures") as batch:
        batch.drop_column("linear_regions")
        batch.drop_column("ntk_cond")
    op.drop_table("events")
    op.drop_table("series_points")
