"""Experiments and architectures in display units: the progress line, the Overview and Compare tables, and the
search-cost text, from ``storage.repo`` rows."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

import pandas as pd

from nas_core.viz._utils import PHASE_LABELS, format_duration

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


def _utc(ts: Any) -> pd.Timestamp | None:
    """Timestamps from storage as UTC (naive ones are taken to be UTC)."""
    if ts is None or (not isinstance(ts, str) and pd.isna(ts)):
        return None
    try:
        t = pd.Timestamp(ts)
    except (TypeError, ValueError):
        return None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


class ProgressInfo(NamedTuple):
    """What the Monitor page's progress bar shows."""

    fraction: float  # 0..1, for st.progress
    text: str
    elapsed_s: float | None
    eta_s: float | None


def progress_info(exp: Mapping[str, Any], now: datetime | None = None) -> ProgressInfo:
    """Progress fraction, a one-line description (phase, epoch, ETA) and timings, from an experiment row.

    The ETA extrapolates the elapsed time linearly in the reported fraction; it is shown only once the
    job is past 2 % so the first noisy seconds do not promise nonsense.
    """
    status = str(exp.get("status") or "")
    try:
        fraction = float(exp.get("progress") or 0.0)
    except (TypeError, ValueError):
        fraction = 0.0
    fraction = 0.0 if math.isnan(fraction) else min(max(fraction, 0.0), 1.0)
    started, finished = _utc(exp.get("started_at")), _utc(exp.get("finished_at"))
    now_ts = _utc(now) if now is not None else pd.Timestamp.now(tz="UTC")
    elapsed = None
    if started is not None:
        elapsed = max(0.0, ((finished or now_ts) - started).total_seconds())
    elif exp.get("duration_s") is not None and not pd.isna(exp.get("duration_s")):
        elapsed = float(exp["duration_s"])
    if status == "succeeded":
        return ProgressInfo(1.0, f"finished in {format_duration(elapsed)}", elapsed, 0.0)
    if status == "queued":
        return ProgressInfo(0.0, "queued, waiting for a worker", None, None)
    if status in TERMINAL:
        return ProgressInfo(fraction, f"{status} at {fraction:.0%} after {format_duration(elapsed)}", elapsed, None)
    phase = PHASE_LABELS.get(str(exp.get("phase") or ""), str(exp.get("phase") or "starting"))
    parts = [phase]
    epoch, total = exp.get("epoch"), exp.get("total_epochs")
    if total is not None and not pd.isna(total) and int(total) > 0 and epoch is not None and not pd.isna(epoch):
        parts.append(f"epoch {int(epoch)}/{int(total)}")
    parts.append(f"{fraction:.0%}")
    eta = elapsed * (1.0 - fraction) / fraction if elapsed is not None and fraction > 0.02 else None
    parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA estimating…")
    return ProgressInfo(fraction, " · ".join(parts), elapsed, eta)


def _float_or_none(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def experiments_table(experiments: pd.DataFrame) -> pd.DataFrame:
    """The Overview table: display units (% accuracy, M MACs, text durations), newest first.

    ``state`` says what an unfinished run is doing (phase, epoch, ETA); ``strategy`` reads "strategy / space".
    """
    cols = ["id", "name", "status", "progress", "state", "strategy", "dataset", "accuracy (%)",
            "MACs (M)", "latency (ms)", "started", "duration", "search cost", "device"]  # fmt: skip
    if experiments is None or experiments.empty:
        return pd.DataFrame(columns=cols)
    df = experiments.sort_values("id", ascending=False)
    now = pd.Timestamp.now(tz="UTC")
    infos = [progress_info(r, now) for r in df.to_dict("records")]
    out = pd.DataFrame(
        {
            "id": df["id"].astype(int),
            "name": df["name"].fillna(""),
            "status": df["status"],
            "progress": pd.to_numeric(df["progress"], errors="coerce").fillna(0.0).clip(0, 1),
            "state": ["" if s == "succeeded" else i.text for s, i in zip(df["status"], infos)],
            "strategy": df["strategy"].astype(str) + " / " + df["space"].astype(str),
            "dataset": df["dataset"],
            "accuracy (%)": pd.to_numeric(df["best_accuracy"], errors="coerce") * 100,
            "MACs (M)": pd.to_numeric(df["macs"], errors="coerce") / 1e6,
            "latency (ms)": pd.to_numeric(df["latency_ms"], errors="coerce"),
            "started": [t.tz_convert(None) if t is not None else pd.NaT for t in map(_utc, df["started_at"])],
            "duration": [format_duration(i.elapsed_s) for i in infos],
            "search cost": [format_duration(_float_or_none(v)) for v in df.get("search_seconds", [None] * len(df))],
            "device": df.get("device", pd.Series([None] * len(df), index=df.index)).fillna(""),
        }
    )
    return out.reset_index(drop=True)


def architectures_table(arch_df: pd.DataFrame) -> pd.DataFrame:
    """Side-by-side metrics of selected architectures, in display units."""
    if arch_df is None or arch_df.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "id": arch_df["id"].astype(int),
            "experiment": arch_df["experiment_name"].fillna(""),
            "strategy": arch_df["strategy"],
            "accuracy (%)": pd.to_numeric(arch_df["accuracy"], errors="coerce") * 100,
            "accuracy kind": arch_df["accuracy_kind"],
            "MACs (M)": pd.to_numeric(arch_df["macs"], errors="coerce") / 1e6,
            "params (M)": pd.to_numeric(arch_df["params"], errors="coerce") / 1e6,
            "latency (ms)": pd.to_numeric(arch_df["latency_ms"], errors="coerce"),
            "NTK cond": pd.to_numeric(arch_df.get("ntk_cond", math.nan), errors="coerce"),
            "linear regions": pd.to_numeric(arch_df.get("linear_regions", math.nan), errors="coerce"),
            "origin": arch_df["origin"],
            "genotype": arch_df["genotype"],
        }
    ).reset_index(drop=True)


def search_cost_text(exp: dict[str, Any]) -> str:
    """'search 2 min 3 s, final training 40 s, on <device>' from an experiment row; '' when unknown."""
    parts = []
    for key, label in (("search_seconds", "search"), ("train_seconds", "final training")):
        value = exp.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{label} {format_duration(float(value))}")
    if not parts:
        return ""
    device = exp.get("device")
    return ", ".join(parts) + (f", on {device}" if device else "")
