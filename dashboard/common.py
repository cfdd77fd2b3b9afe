"""What every page shares: an error guard, storage start-up, the local worker, and experiment labels.

Layout helpers only; figures come from nas_core.viz and data from storage.repo.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

from nas_core.config import ExperimentConfig
from nas_core.errors import ConfigError
from storage import repo

F = TypeVar("F", bound=Callable[..., Any])

#: The page scripts, relative to app.py. A pages/ folder next to the entrypoint is also Streamlit's legacy
#: multipage layout, which can run a deep link bare (without app.py) right after a server start: every page
#: therefore starts with :func:`bootstrap`.
PAGES = {
    "launch": "pages/launch.py",
    "overview": "pages/overview.py",
    "monitor": "pages/monitor.py",
    "compare": "pages/compare.py",
    "export": "pages/export.py",
}


def readable(exc: BaseException) -> str:
    """One line a user can act on, without the traceback."""
    if isinstance(exc, ConfigError):
        return f"{exc.field}: {exc.message}"
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return first if isinstance(exc, (ValueError, KeyError, FileNotFoundError)) else f"{type(exc).__name__}: {first}"


def show_error(what: str, exc: BaseException) -> None:
    """A readable error with the full traceback one click away, never a raw exception."""
    st.error(f"{what}: {readable(exc)}")
    with st.expander("Details"):
        st.code("".join(traceback.format_exception(exc)), language="text")


def guarded(func: F) -> F:
    """Run a page body or fragment so that its errors become st.error; Streamlit's own control flow passes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the browser must never see a raw exception
            show_error("This page hit an error", exc)
            return None

    return wrapper  # type: ignore[return-value]


@st.cache_resource(show_spinner=False)
def _migrate(url: str) -> bool:
    repo.init_db(url=url)
    return True


def init_storage() -> None:
    """Create or migrate the database once per URL and process; stop the page with a message if it cannot."""
    from storage.settings import db_url

    url = db_url()
    try:
        _migrate(url)
    except Exception as exc:  # noqa: BLE001
        show_error(f"Cannot open the database {url}", exc)
        st.stop()


def bootstrap(title: str | None = None) -> None:
    """What every page needs before it draws: wide layout and its tab title, a migrated database, and (once per
    browser session) a worker when none is alive.

    Every page script runs it first, and ``app.py`` leaves it to them: right after a server start, a request
    for a page's URL can run that page without ``app.py`` (a ``pages/`` folder next to the entrypoint is
    Streamlit's legacy multipage layout until a session has run ``st.navigation``), and the page must work
    all the same.
    """
    st.set_page_config(
        page_title=f"{title} · NAS Dashboard" if title else "NAS Dashboard",
        page_icon=":material/hub:",
        layout="wide",
    )
    init_storage()
    if "worker_checked" not in st.session_state:
        # Once per browser session: queued jobs need a worker even if the one that ran them has stopped.
        st.session_state["worker_checked"] = True
        warning = ensure_worker()
        if warning:
            st.warning(warning)


def ensure_worker() -> str | None:
    """Start a local worker when none is alive (NAS_NO_AUTOSTART=1 turns this off); returns a warning or None."""
    try:
        from nas_service.worker import ensure_local_worker

        ensure_local_worker()
    except Exception as exc:  # noqa: BLE001
        return f"Could not start a local worker ({readable(exc)}); run `python -m nas_core worker` in a terminal."
    return None


def queue_experiment(make: Callable[[], ExperimentConfig], state_key: str) -> None:
    """Build the validated config with ``make``, queue it and make sure a worker will take it; a refusal names
    the field and queues nothing. The new experiment's id is kept in ``st.session_state[state_key]``."""
    try:
        cfg = make()
    except ConfigError as exc:
        st.session_state.pop(state_key, None)
        st.error(f"**{exc.field}**: {exc.message}. Nothing was queued.")
        return
    st.session_state[state_key] = repo.create_experiment(cfg.to_dict(), name=cfg.name)
    warning = ensure_worker()
    if warning:
        st.warning(warning)


def show_queued(state_key: str, link_label: str) -> None:
    """The experiment queued under ``state_key`` (if any): a success line and a link to watch it on the Monitor;
    ``link_label`` may use ``{id}``."""
    queued = st.session_state.get(state_key)
    if queued is not None:
        st.success(f"Experiment #{queued} queued.")
        st.page_link(PAGES["monitor"], label=link_label.format(id=queued), icon=":material/monitoring:",
                     query_params={"id": str(queued)})  # fmt: skip


def worker_hint() -> None:
    """Say so when jobs wait and no worker is alive, with the command that starts one."""
    if repo.alive_workers().empty:
        st.warning("No worker is alive, so queued jobs wait. Start one with `python -m nas_core worker`.")


def experiment_label(row: dict[str, Any] | pd.Series) -> str:
    """Label like "#12 name · darts · running": names are optional and not unique, ids are."""
    name = str(row.get("name") or "").strip()
    parts = [f"#{int(row['id'])}" + (f" {name}" if name else ""), str(row.get("strategy") or ""), str(row["status"])]
    return " · ".join(p for p in parts if p)


def query_int(name: str) -> int | None:
    """An integer query parameter (?id=3), or None when absent or malformed."""
    value = st.query_params.get(name)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def pick_experiment(experiments: pd.DataFrame, label: str = "Experiment", param: str = "id") -> int:
    """A selectbox over experiments, newest first, preselected from and kept in the ``?id=`` query parameter."""
    ids = [int(i) for i in experiments.sort_values("id", ascending=False)["id"]]
    labels = {int(r["id"]): experiment_label(r) for r in experiments.to_dict("records")}
    wanted = query_int(param)
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox(label, ids, index=index, format_func=lambda i: labels.get(i, f"#{i}"))
    if query_int(param) != chosen:
        st.query_params[param] = str(chosen)
    return int(chosen)


def no_experiments_yet() -> None:
    st.info("No experiments yet.")
    st.page_link(PAGES["launch"], label="Launch one", icon=":material/rocket_launch:")
