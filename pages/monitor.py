"""Monitor one experiment live: progress, curves, alpha evolution, derived cell, log; readable errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard.common import (
    bootstrap,
    ensure_worker,
    guarded,
    no_experiments_yet,
    pick_experiment,
    show_error,
    worker_hint,
)
from dashboard.trials import trials_section
from nas_core import viz
from nas_core.latency_lut import LatencyLUT, lut_frame
from nas_core.spaces import get_space
from nas_core.strategies import STRATEGIES
from nas_core.strategies.fixed import FIXED
from nas_core.strategies.multitrial import MultiTrialStrategy
from nas_core.strategies.resume import checkpoint_info
from storage import repo

bootstrap("Monitor")  # first: this page may be the first request after a server start

LIVE = ("queued", "running")


@st.cache_resource(max_entries=64, show_spinner=False)
def figure(kind: str, data: pd.DataFrame, *args: Any) -> go.Figure:
    """``viz.<kind>(data, *args)``, rebuilt only when the data changed: the live view redraws every 2 s."""
    return getattr(viz, kind)(data, *args)


@guarded
def _retry(exp_id: int, resume: bool = False) -> None:
    """Queue a failed, cancelled or interrupted experiment again and make sure a worker will take it."""
    if repo.retry_experiment(exp_id, resume=resume) is None:
        st.toast(f"#{exp_id} cannot be queued again in its current state")
        return
    warning = ensure_worker()
    st.toast(warning or f"#{exp_id} {'resumed' if resume else 'queued again'}")


def _multi_trial(exp: dict[str, Any]) -> bool:
    return isinstance(STRATEGIES.get(exp["strategy"]), MultiTrialStrategy)


def _resume_offer(exp: dict[str, Any]) -> tuple[str, str] | None:
    """The Resume button's label and help when the stopped search can go on from where it stopped, else None."""
    if _multi_trial(exp):  # from its finished trials
        finished = repo.events_df(int(exp["id"]), "trial")
        if finished.empty:
            return None
        return (
            f"Resume ({len(finished)} trials done)",
            "Queue it again, reusing every finished trial the search proposes again instead of training it",
        )
    saved = checkpoint_info(repo.experiment_workdir(int(exp["id"])))  # from its last epoch's checkpoint
    if saved is None:
        return None
    return (
        f"Resume from epoch {saved['epochs_done']}/{saved['epochs']}",
        "Queue it again from the checkpoint the search saved at that epoch's end: the same supernet, optimisers "
        "and random streams: it ends as if never interrupted",
    )


def _status(exp: dict[str, Any]) -> None:
    status = exp["status"]
    info = viz.progress_info(exp)
    if status == "failed":
        st.error(f"Failed: {exp.get('error') or exp.get('message') or 'no message recorded'}")
        if exp.get("traceback"):
            with st.expander("Full traceback"):
                st.code(exp["traceback"], language="text")
    elif status in ("cancelled", "interrupted"):
        st.warning(f"{status.capitalize()}: {exp.get('message') or ''}")
    elif status == "queued":
        worker_hint()
    if status in ("failed", "cancelled", "interrupted"):
        left, right = st.columns([1, 4])
        left.button("Run again", key="retry", on_click=_retry, args=(int(exp["id"]),), icon=":material/replay:")
        resume = _resume_offer(exp)
        if resume is not None:
            right.button(resume[0], key="resume", on_click=_retry, args=(int(exp["id"]), True),
                         icon=":material/resume:", help=resume[1])  # fmt: skip
    st.progress(info.fraction, text=info.text)
    cols = st.columns(4)
    kind = f" ({exp['accuracy_kind']})" if exp.get("accuracy_kind") else ""
    cols[0].metric("Accuracy" + kind, viz.format_number(exp.get("best_accuracy"), ".2f", " %", 100.0))
    cols[1].metric("MACs", viz.format_number(exp.get("macs"), ".2f", " M", 1e-6))
    cols[2].metric("Params", viz.format_number(exp.get("params"), ".3f", " M", 1e-6))
    cols[3].metric("Latency (batch 1)", viz.format_number(exp.get("latency_ms"), ".2f", " ms"))
    cost = viz.search_cost_text(exp)
    if cost:
        st.caption(f"Cost: {cost}.")


def _current_genotype(exp_id: int, exp: dict[str, Any]) -> str:
    """The final genotype once known, else the one derived at the latest alpha snapshot."""
    if exp.get("genotype"):
        return str(exp["genotype"])
    genotypes = repo.genotypes_df(exp_id)
    return str(genotypes["genotype"].iloc[-1]) if not genotypes.empty else ""


def _alphas(exp_id: int, space: Any) -> None:
    alphas = repo.alphas_df(exp_id)
    st.subheader("Alpha evolution")
    if alphas.empty:
        st.caption("No architecture weights recorded yet (strategies without alphas record none).")
        return
    cells = viz.alpha_cells(alphas)
    cell = st.radio("Cell", cells, horizontal=True, key="alpha_cell") if len(cells) > 1 else cells[0]
    st.plotly_chart(figure("alpha_lines", alphas, cell, space.ops), key="alpha_lines")
    steps = viz.alpha_steps(alphas)
    step = steps[-1]
    if len(steps) > 1 and not st.toggle("Follow the latest step", value=True, key="alpha_follow"):
        step = st.select_slider("Step", options=steps, value=steps[-1], key="alpha_step")
    left, right = st.columns(2)
    left.plotly_chart(figure("alpha_heatmap", alphas, step, cell, space.ops), key="alpha_heatmap")
    right.plotly_chart(figure("param_free_share", alphas, tuple(sorted(space.param_free_ops))), key="param_free")
    if space.derives_top2_inputs:  # the derivation rule made visible: each node keeps its 2 strongest inputs
        st.plotly_chart(viz.node_top2(alphas, step, cell, space), key="node_top2")


def _signals(exp_id: int) -> None:
    """Named series a strategy records (tau, entropy, betas, kappa, regions ...), one chart per group."""
    series = repo.series_df(exp_id)
    groups = viz.series_groups(series)
    if not groups:
        return
    st.subheader("Search signals")
    cols = st.columns(2)
    for i, group in enumerate(groups):
        cols[i % 2].plotly_chart(figure("series_figure", series, group), key=f"series_{group}")


def _pruning(exp_id: int, alphas: pd.DataFrame) -> None:
    """TE-NAS: which op left which edge in each round and why, and the supernet as it shrank."""
    events = repo.events_df(exp_id, "prune")
    if events.empty:
        return
    st.subheader("Pruning rounds")
    table = viz.prune_table(events)
    st.caption("Each round removes the op whose removal hurts trainability (kappa up) and expressivity "
               "(regions down) least: lowest sum of the two ranks (0 = best to prune).")  # fmt: skip
    left, right = st.columns([3, 2])
    number = st.column_config.NumberColumn
    columns = {
        "d_kappa": number("Δ kappa (rel.)", format="%+.4f"),
        "d_regions": number("Δ regions (rel.)", format="%+.4f"),
    }
    left.dataframe(table, hide_index=True, height=360, key="prune_table", column_config=columns)
    steps = viz.alpha_steps(alphas)
    with right:
        at = steps[-1] if steps else 0
        if len(steps) > 1:
            at = st.select_slider("Supernet after round", options=steps, value=steps[-1], key="prune_round")
        cells = viz.alpha_cells(alphas) if not alphas.empty else []
        cell = cells[0] if cells else None
        if len(cells) > 1:  # DARTS space: normal and reduction cell
            cell = st.radio("Cell", cells, horizontal=True, key="prune_cell")
        st.graphviz_chart(viz.supernet_dot(alphas, at, cell))


def _shrinks(exp_id: int) -> None:
    """AtomNAS: what each shrink removed (atoms per block and kernel) and the MACs before and after."""
    table = viz.event_table(repo.events_df(exp_id, "shrink"), "shrink")
    if table.empty:
        return
    st.subheader("Shrinks")
    st.dataframe(table, hide_index=True, key="shrink_table")


def _latency_lut(exp_id: int) -> None:
    """ProxylessNAS: the per-block latency lookup table this run used (measured on this machine)."""
    events = repo.events_df(exp_id, "latency_lut")
    if events.empty:
        return
    info = events["data"].iloc[-1]
    path = Path(str(info.get("path", "")))
    how = "reused" if info.get("reused") else f"built in {float(info.get('build_seconds') or 0):.1f} s"
    with st.expander(f"Latency lookup table ({how}; {info.get('threads')} thread(s), {info.get('device')})"):
        if not path.is_file():
            st.caption(f"The table file {path} is no longer there.")
            return
        try:
            lut = LatencyLUT.from_json(json.loads(path.read_text()), path)
        except (OSError, ValueError, KeyError) as exc:
            show_error(f"Cannot read the latency table {path}", exc)
            return
        st.caption(f"{path} · fixed layers (stem, first block, head, classifier) {lut.fixed_ms:.3f} ms")
        if lut.drift_pct is not None:
            note = lut.steadiness()
            if lut.unsteady:
                st.warning(note[0].upper() + note[1:], icon=":material/warning:")
            else:
                st.caption(note[0].upper() + note[1:] + ".")
        st.dataframe(lut_frame(lut), hide_index=True, key="lut_table")


def _cell(exp_id: int, exp: dict[str, Any], space: Any) -> None:
    st.subheader("Derived cell")
    genotype = _current_genotype(exp_id, exp)
    if not genotype:
        st.caption("No genotype derived yet.")
        return
    strategy = STRATEGIES.get(exp["strategy"])
    flag = viz.collapse_flag(genotype, space) if strategy is None or strategy.derives_from_weights else None
    if flag:  # DARTS's collapse: a warning about searches that read the cell off architecture weights
        st.warning(flag, icon=":material/warning:")
    try:
        st.graphviz_chart(space.to_dot(genotype))
    except Exception as exc:  # noqa: BLE001 - a bad genotype must not hide the rest of the page
        show_error("Cannot draw this genotype", exc)
    st.code(genotype, language="text", wrap_lines=True)


def _log(exp_id: int) -> None:
    st.subheader("Log")
    logs = repo.logs_df(exp_id, tail=200)
    if logs.empty:
        st.caption("Nothing logged yet.")
        return
    rows = zip(logs["ts"], logs["level"], logs["message"])
    lines = [f"{ts:%H:%M:%S} {lvl:<7} {msg}" for ts, lvl, msg in rows][::-1]
    st.caption("Newest first (UTC).")
    st.code("\n".join(lines), language="text", wrap_lines=True, height=360)


@guarded
def live(exp_id: int, was_live: bool) -> None:
    exp = repo.get_experiment(exp_id)
    if exp is None:
        st.warning(f"Experiment #{exp_id} no longer exists.")
        return
    if (exp["status"] in LIVE) != was_live:
        st.rerun()  # started or finished: redraw the page with (or without) the refresh timer
    st.markdown(f"**{exp['strategy']}** on **{exp['space']}**, data **{exp['dataset']}** · status **{exp['status']}**")
    _status(exp)
    if exp.get("kind") == "proxies":
        n = len((exp.get("config") or {}).get("architecture_ids") or [])
        st.caption(f"Background evaluation of training-free proxies for {n} stored architecture(s); the scores "
                   "appear in the Compare page's proxy chart as they are computed.")  # fmt: skip
        _log(exp_id)
        return
    space = get_space(exp["space"])
    epochs = repo.epochs_df(exp_id)
    if not epochs.empty or exp["status"] in LIVE:
        st.subheader("Training curves")
        st.plotly_chart(figure("training_curves", epochs), key="curves")
    if _multi_trial(exp):
        trials_section(exp)  # no architecture weights: the candidates themselves are the search's record
    elif exp["strategy"] == FIXED.name:
        source = ((exp.get("config") or {}).get("params") or {}).get("source")
        st.caption(f"No search: this run trains a given architecture{f' ({source})' if source else ''}.")
    else:
        _alphas(exp_id, space)
    _signals(exp_id)
    _pruning(exp_id, repo.alphas_df(exp_id))
    _shrinks(exp_id)
    _latency_lut(exp_id)
    left, right = st.columns([2, 3])
    with left:
        _cell(exp_id, exp, space)
    with right:
        _log(exp_id)
    with st.expander("Configuration"):
        st.json(exp.get("config") or {})


@guarded
def main() -> None:
    st.title("Monitor")
    exps = repo.list_experiments()
    if exps.empty:
        no_experiments_yet()
        return
    exp_id = pick_experiment(exps)
    status = exps.loc[exps["id"] == exp_id, "status"].iloc[0]
    was_live = status in LIVE
    st.fragment(live, run_every=2 if was_live else None)(exp_id, was_live)


main()
