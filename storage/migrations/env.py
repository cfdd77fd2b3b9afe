"""Alembic environment, driven from code (storage.repo.init_db) or from the alembic CLI.

init_db hands over an open connection (``config.attributes["connection"]``) that already holds the
database's write lock, so two processes migrating at once run one after the other.
"""

from __future__ import annotations

from alembic import context

from storage.db import get_engine
from storage.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can only ALTER through table copies
        transactional_ddl=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or None
    with get_engine(url).execution_options(sqlite_begin="IMMEDIATE").connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()


def run_migrations_offline() -> None:
    from storage.settings import db_url

    context.configure(
        url=config.get_main_option("sqlalchemy.url") or db_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
