"""Multi-trial evaluation on Ray: a real local Ray instance runs a tiny random search (every trial lands, the best
is kept, a trial scores as it does in process, no Ray process outlives the search), cancel kills the running
trials, and executor=ray is refused by name where Ray is not installed."""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_multitrial import ROOT, TINY

from nas_core.config import ExperimentConfig
from nas_core.data import load_dataset
from nas_core.errors import Cancelled, ConfigError
from nas_core.pipeline import ExperimentResult, run_experiment
from nas_core.reporting import MemoryReporter
from nas_core.strategies.multitrial import TrialSettings, run_trial
from nas_service import cli
from storage import repo

pytestmark = pytest.mark.usefixtures("one_thread")
RAY_TRIAL = "ray::_ray_trial"  # a Ray worker's process title while it runs a trial
#: 127.0.0.1 and ::1 as /proc/net/tcp and tcp6 write them (IPv4 also as ::ffff:127.0.0.1)
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _descendants() -> dict[int, str]:
    """pid -> command line of every live process below this one (from /proc; zombies count as gone)."""
    children: dict[int, list[int]] = defaultdict(list)
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue  # exited while we looked
        if state != "Z":
            children[int(ppid)].append(int(entry.name))
            commands[int(entry.name)] = command
    found, todo = {}, [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), []):
            found[pid] = commands[pid]
            todo.append(pid)
    return found


def _listening(pids: set[int]) -> dict[int, list[str]]:
    """pid -> the local addresses (as /proc/net writes them) its TCP sockets listen on."""
    address_of = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                address_of[f"socket:[{fields[9]}]"] = fields[1].rsplit(":", 1)[0]
    found: dict[int, list[str]] = {}
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue  # exited while we looked
        found[pid] = [address_of[link] for link in links if link in address_of]
    return found


def _alive(pids: set[int]) -> set[int]:
    def running(pid: int) -> bool:
        try:
            return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
        except OSError:
            return False

    return {pid for pid in pids if running(pid)}


def _gone_within(pids: set[int], seconds: float) -> set[int]:
    """The pids still alive after waiting up to ``seconds`` (a killed raylet's workers exit on their own)."""
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


@dataclass
class _Watching(MemoryReporter):
    """Records the processes below this one, and where they listen, each time a trial lands (Ray is up)."""

    seen: dict[int, str] = field(default_factory=dict)
    listening: dict[int, list[str]] = field(default_factory=dict)

    #: processes below this one from before the search (e.g. multiprocessing's resource tracker, which an
    #: earlier test's process pool starts and which lives as long as this process): not the search's
    before: set[int] = field(default_factory=lambda: set(_descendants()))

    def event(self, kind: str, step: int, data: dict[str, Any]) -> None:
        super().event(kind, step, data)
        if kind == "trial":
            self.seen |= {pid: c for pid, c in _descendants().items() if pid not in self.before}
            self.listening |= _listening({os.getpid(), *self.seen})


@dataclass(frozen=True)
class RaySearch:
    config: ExperimentConfig
    reporter: _Watching
    result: ExperimentResult
    seconds: float
    left: dict[int, str]  # processes below this one that outlived the search (and a short grace)


def _run_on_local_ray(cfg: ExperimentConfig, rep: MemoryReporter, work: Path) -> ExperimentResult:
    """Run ``cfg`` as a user would outside the repository: from ``work``, without PYTHONPATH (Ray's workers get
    nas_core from the job itself) and without RAY_ADDRESS (a local instance); torch's threads restored after."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.delenv("PYTHONPATH", raising=False)
        mp.delenv("RAY_ADDRESS", raising=False)
        result = run_experiment(cfg, rep)
    torch.set_num_threads(threads)
    return result


@pytest.fixture(scope="module")
def ray_search(tmp_path_factory: pytest.TempPathFactory) -> RaySearch:
    """One real search on a local Ray instance, shared by the tests below (Ray's start-up costs seconds)."""
    work = tmp_path_factory.mktemp("ray_search")
    cfg = ExperimentConfig(strategy="random", space="nb201", **TINY | {"dataset": "digits"},
                           params={"trials": 3, "workers": 2, "executor": "ray"}).validated()  # fmt: skip
    rep = _Watching(workdir=work / "runs")
    t0 = time.perf_counter()
    result = _run_on_local_ray(cfg, rep, work)
    seconds = time.perf_counter() - t0
    _gone_within(set(rep.seen), 10)
    return RaySearch(cfg, rep, result, seconds, {p: c for p, c in _descendants().items() if p not in rep.before})


def test_ray_search_trains_every_trial_and_keeps_the_best_by_validation(ray_search: RaySearch) -> None:
    rep, res = ray_search.reporter, ray_search.result
    assert any("at once on a local Ray instance" in line for _, _, line in rep.logs)
    trials = {step: d for kind, step, d in rep.events if kind == "trial"}
    assert sorted(trials) == [0, 1, 2]  # every trial landed, once
    assert all(0.0 <= d["val_acc"] <= 1.0 and d["params"] > 0 and d["seconds"] > 0 for d in trials.values())
    best = max(trials.values(), key=lambda d: d["val_acc"])
    assert res.genotype == best["genotype"] and res.supernet_accuracy == best["val_acc"]
    print(f"ray search (3 trials, 2 workers, with Ray's start and the final training): {ray_search.seconds:.1f} s")


def test_ray_processes_ran_the_trials_and_are_gone_after(ray_search: RaySearch) -> None:
    seen = ray_search.reporter.seen
    commands = " | ".join(seen.values())
    assert "raylet" in commands and "gcs_server" in commands, commands  # a real local instance ran
    assert any(c.startswith("ray::") for c in seen.values()), commands  # and its worker processes
    assert not _alive(set(seen)), {pid: seen[pid] for pid in _alive(set(seen))}
    assert not ray_search.left, ray_search.left


def test_the_local_ray_instance_listens_on_loopback_only(ray_search: RaySearch) -> None:
    listening = ray_search.reporter.listening
    addresses = {address for pid_addresses in listening.values() for address in pid_addresses}
    assert len(addresses) >= 1 and addresses <= LOOPBACK, {
        ray_search.reporter.seen.get(pid, "driver"): a for pid, a in listening.items() if a
    }


@pytest.mark.slow
def test_progressive_search_grows_its_stages_on_ray(tmp_path: Path) -> None:
    """The progressive search's stages (a barrier each) on Ray tasks, through the same executor wrapper."""
    params = {"beam": 1, "predictors": 1, "workers": 2, "executor": "ray"}
    cfg = ExperimentConfig(strategy="progressive", space="nb201", **TINY | {"dataset": "digits"}, params=params)
    rep = _Watching(workdir=tmp_path / "runs")
    _run_on_local_ray(cfg, rep, tmp_path)
    assert any("at once on a local Ray instance" in line for _, _, line in rep.logs)
    trials = {step: d for kind, step, d in rep.events if kind == "trial"}
    assert [trials[i]["stage"] for i in sorted(trials)] == [1, 1, 1, 1, 2, 3]
    assert any(c.startswith("ray::") for c in rep.seen.values())
    assert not _gone_within(set(rep.seen), 10)


def test_a_ray_trial_scores_as_it_does_in_process(ray_search: RaySearch) -> None:
    """Same run_trial, same settings, one torch thread: the same accuracy to the last bit."""
    cfg = ray_search.config
    best = max((d | {"index": step} for kind, step, d in ray_search.reporter.events if kind == "trial"),
               key=lambda d: d["val_acc"])  # fmt: skip
    settings = TrialSettings(cfg.space, cfg.channels, cfg.cells_per_stage, cfg.epochs, cfg.final_lr, cfg.batch_size,
                             cfg.seed, cfg.channels_last)  # fmt: skip
    data = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction,
                        image_size=cfg.image_size, max_train_per_class=cfg.max_train_per_class)  # fmt: skip
    acc, params, _, macs, latency = run_trial(settings, data, best["genotype"], best["index"])
    assert latency is None  # not asked for
    assert (acc, params, macs) == (best["val_acc"], best["params"], best["macs"])


@dataclass
class _StopWhenTrialsRun(MemoryReporter):
    """Asks to stop as soon as a Ray worker is running a trial (or after a minute, so a failure cannot hang)."""

    stopped_at: float | None = None
    running: dict[int, str] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)
    _next_look: float = 0.0

    def should_stop(self) -> bool:
        now = time.monotonic()
        if self.stopped_at is None and now >= self._next_look:
            self._next_look = now + 0.2
            self.running = {pid: c for pid, c in _descendants().items() if c.startswith(RAY_TRIAL)}
            if self.running or now - self._started > 60:
                self.stopped_at = now
        return self.stopped_at is not None


def test_cancel_during_ray_trials_kills_them_promptly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = ExperimentConfig(strategy="random", space="nb201", **TINY | {"epochs": 200},
                           params={"trials": 4, "workers": 2, "executor": "ray"})  # fmt: skip
    before = set(_descendants())  # e.g. an earlier test's resource tracker: not this search's
    rep = _StopWhenTrialsRun(workdir=tmp_path)
    with pytest.raises(Cancelled):
        run_experiment(cfg, rep)
    assert rep.stopped_at is not None and rep.running, "no Ray trial was seen running"
    stop_seconds = time.monotonic() - rep.stopped_at  # cancel the tasks and shut the local instance down
    assert stop_seconds < 10, stop_seconds
    assert not _gone_within(set(rep.running), 10)  # the trials' worker processes were killed
    assert not _gone_within(set(_descendants()) - before, 10), _descendants()
    assert not [kind for kind, _, _ in rep.events if kind == "trial"]  # 200 epochs each: none finished
    print(f"cancel to Cancelled, with Ray's shutdown: {stop_seconds:.1f} s")


def test_executor_ray_is_refused_by_name_where_ray_is_missing(
    monkeypatch: pytest.MonkeyPatch, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where it is not installed
    with pytest.raises(ConfigError) as err:
        ExperimentConfig(strategy="random", **TINY, params={"executor": "ray"}).validated()
    assert err.value.field == "params.executor" and "pip install ray==2.60.0" in err.value.message

    assert cli.main(["search", "--strategy", "random", "--dataset", "synthetic", "--set", "executor=ray"]) == 2
    assert "params.executor" in capsys.readouterr().err

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.selectbox(key="strategy").set_value("random").run()
    at.selectbox(key="dataset").set_value("synthetic")
    at.selectbox(key="p_random_executor").set_value("ray")
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("params.executor" in e and "pip install ray" in e for e in errors), errors
    assert repo.list_experiments().empty  # nothing queued
