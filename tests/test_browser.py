"""The whole app once in a real headless Chromium: launch a tiny search from the form, watch it finish,
see the alpha plot on Monitor and the Pareto chart on Compare.

Needs Debian's chromium at /usr/bin/chromium (skipped otherwise). Set NAS_SCREENSHOT=1 to write
docs/screenshot.png (or NAS_SCREENSHOT=<path> for another file).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
RUN_TIMEOUT_MS = 420_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.5)
    pytest.fail(f"streamlit did not become healthy in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(pid: int, grace: float = 10.0) -> None:
    """SIGTERM one process we started, then SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def dashboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`streamlit run app.py` on a free port with a fresh database; autostarting the worker is allowed."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("NAS_RUNS_DIR", str(runs))  # this process reads the same database to find the workers
    monkeypatch.setenv("NAS_DB_URL", f"sqlite:///{runs / 'nas.db'}")
    monkeypatch.delenv("NAS_NO_AUTOSTART", raising=False)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    port = _free_port()
    log = tmp_path / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1", "--server.port",
           str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        _stop(proc.pid)
        _stop_workers(runs)


def _stop_workers(runs: Path) -> None:
    """Stop the workers the app started against this test's database (pids from the database and pid file)."""
    from storage import repo

    pids: set[int] = set()
    with contextlib.suppress(Exception):
        pids |= {int(pid) for pid in repo.alive_workers(max_age_s=3600)["pid"].dropna()}
    with contextlib.suppress(OSError, ValueError, IndexError):
        pids.add(int((runs / "worker.pid").read_text().split()[0]))
    for pid in pids:
        _stop(pid)


def test_launch_watch_compare_in_chromium(dashboard: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    url = dashboard
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.set_default_timeout(60_000)
            expect = sync_api.expect
            expect.set_options(timeout=60_000)  # the first run imports torch

            # A deep link as the first request after the server starts still runs inside app.py's navigation.
            page.goto(f"{url}/overview")
            expect(page.get_by_role("heading", name="Experiments")).to_be_visible()
            expect(page.get_by_text("No experiments yet.")).to_be_visible()
            expect(page.get_by_role("link", name="common")).to_have_count(0)
            page.goto(url)

            # Launch: a tiny search on the synthetic set.
            expect(page.get_by_role("heading", name="Launch a search")).to_be_visible()
            page.get_by_role("combobox", name="Data set").click()
            page.get_by_role("option", name=re.compile(r"^synthetic")).click()
            page.get_by_label("Name (optional)").fill("browser run")
            for label, value in (("epochs", "1"), ("final epochs", "1")):
                field = page.get_by_role("spinbutton", name=label, exact=True)
                field.fill(value)
                field.press("Tab")
            page.get_by_role("button", name="Launch").click()
            expect(page.get_by_text("Experiment #1 queued.")).to_be_visible()

            # Monitor: live until it finishes (the app started a worker), then the alpha plot.
            page.get_by_role("link", name="Watch #1 on the Monitor page").click()
            expect(page.get_by_text("status succeeded")).to_be_visible(timeout=RUN_TIMEOUT_MS)
            expect(page.get_by_text(re.compile(r"^finished in \d"))).to_be_visible()
            # The finish triggers a full rerun; until it completes the fragment's last elements linger as stale
            # copies, so wait for exactly one of each before looking at it.
            alpha = page.locator(".js-plotly-plot").filter(has_text="Softmax weight of each op, per edge")
            expect(alpha).to_have_count(1)
            expect(alpha).to_be_visible()
            cell = page.locator("[data-testid=stGraphVizChart]")
            expect(cell).to_have_count(1)
            expect(cell).to_be_visible()
            assert page.locator("[data-testid=stException]").count() == 0
            shot = os.environ.get("NAS_SCREENSHOT", "")
            if shot:
                target = ROOT / "docs" / "screenshot.png" if shot == "1" else Path(shot)
                target.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(target), full_page=True)

            # Compare: the Pareto chart with the new architecture on it; clicking it shows it side by side.
            page.goto(f"{url}/compare")
            pareto = page.locator(".js-plotly-plot").filter(has_text="Accuracy vs MACs (M)")
            expect(pareto).to_have_count(1)
            expect(pareto).to_be_visible()
            pareto.locator(".scatterlayer .trace .points path").first.click(force=True)
            expect(page.get_by_text("Selected architectures (1)")).to_be_visible()
            assert page.locator("[data-testid=stException]").count() == 0
        finally:
            browser.close()


def test_monitor_draws_the_trials_pareto_front_in_chromium(dashboard: str) -> None:
    """A finished evolution run: the Monitor's accuracy-MACs chart of its trials renders, with the trial table;
    a trial queued for final training from there is run by the worker the app starts."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from nas_service.jobs import run_job
    from storage import repo

    cfg = {"strategy": "evolution", "space": "nb201", "dataset": "synthetic", "epochs": 1, "final_epochs": 1,
           "channels": 2, "final_channels": 2, "cells_per_stage": 1, "threads": 1,
           "params": {"trials": 4, "population": 2, "sample_size": 2}}  # fmt: skip
    exp_id = repo.create_experiment(cfg, name="browser evolution")
    assert run_job(exp_id, heartbeat=False)["status"] == "succeeded"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            expect = sync_api.expect
            expect.set_options(timeout=60_000)
            page.goto(f"{dashboard}/monitor?id={exp_id}")
            expect(page.get_by_text("status succeeded")).to_be_visible()
            chart = page.locator(".js-plotly-plot").filter(has_text="Pareto front")
            expect(chart).to_have_count(1)
            expect(chart).to_be_visible()
            expect(chart.get_by_text("MACs (M)", exact=True)).to_be_visible()  # the cost axis
            expect(chart.locator(".scatterlayer .trace .points path")).to_have_count(4)
            expect(page.get_by_role("heading", name="Trials")).to_be_visible()
            assert page.locator("[data-testid=stException]").count() == 0

            # Any trial can be trained at the final size: queue one, follow the link, the worker finishes it.
            page.get_by_role("button", name="Queue", exact=True).click()
            expect(page.get_by_text(f"Experiment #{exp_id + 1} queued.")).to_be_visible()
            page.get_by_role("link", name=f"Watch #{exp_id + 1}").click()
            expect(page.get_by_text("No search: this run trains a given architecture")).to_be_visible()
            expect(page.get_by_text("status succeeded")).to_be_visible(timeout=240_000)
            assert page.locator("[data-testid=stException]").count() == 0
        finally:
            browser.close()
    (arch,) = repo.architectures_df([exp_id + 1]).to_dict("records")
    assert arch["strategy"] == "fixed" and arch["accuracy_kind"] == "test"


#: every page's URL path (the default page, Launch, is the root) and the heading it shows on an empty database
PAGE_HEADINGS = {
    "": "Launch a search",
    "overview": "Experiments",
    "monitor": "Monitor",
    "compare": "Compare architectures",
    "export": "Export an architecture",
}


@pytest.mark.parametrize("path", list(PAGE_HEADINGS), ids=[p or "launch" for p in PAGE_HEADINGS])
def test_every_page_url_renders_as_the_first_request_after_a_server_start(dashboard: str, path: str) -> None:
    """pages/ next to app.py is Streamlit's legacy multipage layout until a session has run st.navigation, so
    the very first request for a page's URL may run that page without app.py: each page bootstraps itself
    (layout, database, worker check) and must render all the same, with its own tab title."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            sync_api.expect.set_options(timeout=90_000)  # the first request of a fresh server imports torch
            page.goto(f"{dashboard}/{path}")
            heading = PAGE_HEADINGS[path]
            sync_api.expect(page.get_by_role("heading", name=heading)).to_be_visible()
            sync_api.expect(page).to_have_title(re.compile(rf"^{(path or 'launch').capitalize()} · NAS Dashboard$"))
            assert page.locator("[data-testid=stException]").count() == 0
            assert "This page hit an error" not in page.content()
        finally:
            browser.close()
