"""The ``device`` setting: checked by name, resolved where the run starts, and every strategy runs end to end
on each device this machine has (CUDA where torch sees a GPU; on a CPU-only machine the accelerator cases
skip and the refusals are checked instead)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas_core.config import ExperimentConfig
from nas_core.data import batches, load_dataset
from nas_core.devices import describe_local, local_devices, parse_device, resolve_device
from nas_core.errors import ConfigError
from nas_core.export import load_checkpoint
from nas_core.pipeline import run_experiment
from nas_core.proxies import ProxyEvaluator, genotype_weights
from nas_core.reporting import MemoryReporter
from nas_core.spaces.nb201_arch import parse_genotype

ROOT = Path(__file__).resolve().parents[1]
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|"
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA GPU on this machine")
needs_no_cuda = pytest.mark.skipif(CUDA, reason="this machine has a CUDA GPU")

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"dataset": "synthetic", "epochs": 1, "final_epochs": 1, "channels": 2, "final_channels": 2,
        "cells_per_stage": 1, "batch_size": 32, "threads": 1}  # fmt: skip
MOBILE = {"dataset": "digits", "epochs": 2, "final_epochs": 1, "batch_size": 32, "threads": 1,
          "max_train_per_class": 20}  # fmt: skip
LUT = {"lut_repeats": 3, "lut_warmup": 1, "lut_seconds": 0, "arch_every": 2}
TENAS = {"ntk_batch": 12, "repeats": 1, "region_samples": 100}

#: (strategy, space, config over TINY/MOBILE, params): every strategy, and the executors that move data
CASES = [
    ("darts", "nb201", {}, {}),
    ("darts-2nd", "darts", {}, {}),
    ("single-darts", "nb201", {}, {}),
    ("pc-darts", "darts", {"channels": 4}, {"warmup_epochs": 0}),  # its K=4 divides the channels
    ("gdas", "nb201", {}, {}),
    ("gdas", "darts", {}, {}),
    ("tenas", "nb201", {"final_epochs": 0}, TENAS),
    ("tenas", "darts", {"final_epochs": 0}, TENAS),
    ("proxylessnas", "mobilenet", {}, {**LUT, "resource": "latency", "target_latency_ms": 1.0}),
    ("atomnas", "mobilenet", {"final_epochs": 0, "batch_size": 128, "max_train_per_class": 40}, {"target_macs": 0.6}),
    ("random", "nb201", {}, {"trials": 2, "workers": 2, "latency": True}),
    ("evolution", "mobilenet", {}, {"trials": 3, "population": 2, "sample_size": 2}),
    ("progressive", "nb201", {}, {"beam": 2, "predictors": 2}),
    ("fixed", "darts", {}, {"genotype": "DARTS_V2"}),
]


def _config(strategy: str, space: str, over: dict, params: dict, device: str) -> ExperimentConfig:
    base = MOBILE if space == "mobilenet" else TINY
    cfg = {"strategy": strategy, "space": space, **base, **over, "device": device, "params": params}
    return ExperimentConfig(**cfg).validated()


@pytest.mark.parametrize("spec, want", [("auto", "auto"), (" CUDA:1 ", "cuda:1"), ("cpu", "cpu"), ("mps", "mps")])
def test_device_spellings_are_normalised(spec, want):
    assert parse_device(spec) == want


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "", "tpu", "cuda:-1"])
def test_a_bad_device_is_refused_by_name(spec):
    with pytest.raises(ConfigError, match="device: must be auto, cpu, cuda, cuda:N or mps"):
        ExperimentConfig(strategy="random", space="nb201", **TINY, device=spec).validated()


def test_device_defaults_to_auto_and_auto_resolves_here():
    assert ExperimentConfig().device == "auto"
    dev = resolve_device("auto")
    assert dev.type == ("cuda" if CUDA else "cpu")
    assert "auto" in local_devices() and "cpu" in local_devices()
    assert ("cuda" in local_devices()) == CUDA
    assert describe_local()


@needs_no_cuda
def test_cuda_without_a_gpu_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"device: cuda asked for, but .*use auto or cpu"):
        resolve_device("cuda")
    # spelled right, so queueing accepts it: the worker that runs it may have the GPU this machine lacks
    assert ExperimentConfig(strategy="random", space="nb201", **TINY, device="cuda").validated().device == "cuda"


@needs_cuda
def test_a_gpu_index_past_the_last_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"device: cuda:99 asked for, but this machine has \d+ CUDA GPU"):
        resolve_device("cuda:99")


def test_the_cli_refuses_a_device_this_machine_lacks_before_storing_anything(tmp_path):
    bad = "cuda:99" if CUDA else "cuda"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "NAS_RUNS_DIR": str(tmp_path), "NAS_DB_URL": f"sqlite:///{tmp_path / 'nas.db'}",
           "NAS_NO_AUTOSTART": "1", "PYTHONPATH": path}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "nas_core", "search", "--strategy", "random", "--dataset", "synthetic",
         "--device", bad, "--set", "trials=1"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert f"error: invalid setting device: {bad} asked for" in run.stderr
    listing = subprocess.run([sys.executable, "-m", "nas_core", "list", "--json"], capture_output=True, text=True,
                             env=env, cwd=ROOT, timeout=120)  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout.strip().splitlines()[-1]) == []


def test_dataset_moves_once_and_batches_follow_it():
    data = load_dataset("synthetic", 0)
    assert data.to("cpu") is data  # already there: no copy
    target = "cuda" if CUDA else "meta"  # the meta device has no data, but shapes and devices move the same
    moved = data.to(target)
    assert moved.device.type == target and moved.input_shape == data.input_shape
    assert all(getattr(moved, k).device.type == target for k in ("x_val", "y_val", "x_test", "y_test", "y_train"))
    if CUDA:
        gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        for (xa, ya), (xb, yb) in zip(batches(data.x_train, data.y_train, 16, gen_a),
                                      batches(moved.x_train, moved.y_train, 16, gen_b)):  # fmt: skip
            assert torch.equal(xa, xb.cpu()) and torch.equal(ya, yb.cpu())  # the same order on either device


def _device_cases() -> list:
    """Every strategy on each accelerator here; on the CPU only one (the strategies' own tests run them all)."""
    out = [pytest.param("cpu", *CASES[-4], id="cpu-random")]
    if CUDA:
        out += [pytest.param("cuda", *c, id=f"cuda-{c[0]}-{c[1]}") for c in CASES]
    return out


@pytest.mark.parametrize("device, strategy, space, over, params", _device_cases())
def test_strategy_runs_end_to_end_on_the_device(device, strategy, space, over, params, tmp_path, monkeypatch):
    """Search and final training on ``device``; params, MACs, latency and exports on the CPU as always."""
    monkeypatch.setenv("NAS_RUNS_DIR", str(tmp_path))  # ProxylessNAS's latency table lands here
    cfg = _config(strategy, space, over, {**params, **({"lut_dir": str(tmp_path / "luts")} if "lut_repeats" in params
                                                        else {})}, device)  # fmt: skip
    rep = MemoryReporter(workdir=tmp_path / "run")
    res = run_experiment(cfg, rep)
    assert res.status == "succeeded"
    text = "\n".join(line for _, _, line in rep.logs)
    dev = resolve_device(device)
    if dev.type == "cuda":
        assert f"on cuda:{dev.index} ({torch.cuda.get_device_name(dev.index)})" in text, text
        assert res.device == torch.cuda.get_device_name(dev.index)
    else:
        assert "thread(s) on CPU" in text, text
    (arch,) = rep.architectures
    assert arch.latency_device.startswith("CPU")  # timed on the CPU whatever trained it
    assert arch.params > 0 and arch.macs > 0 and arch.latency_ms > 0
    if strategy not in ("tenas",) and cfg.final_epochs > 0:
        assert 0.0 <= arch.accuracy <= 1.0
    state = torch.load(res.artifacts["checkpoint"], weights_only=True)["state_dict"]  # no map_location
    assert state and all(v.device.type == "cpu" for v in state.values())  # loads on a machine without the GPU
    net, _ = load_checkpoint(res.artifacts["checkpoint"])
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, *load_dataset(cfg.dataset, 0).input_shape)).shape[0] == 1


@needs_cuda
def test_proxies_score_the_same_inits_and_inputs_on_the_gpu():
    """The nets are initialised and the batches drawn on the CPU, so only float rounding differs."""
    data = load_dataset("digits", 0)
    w = genotype_weights(parse_genotype(ARCH))
    scores = {}
    for device in ("cpu", "cuda"):
        ev = ProxyEvaluator(data.x_train, data.num_classes, ntk_batch=24, region_samples=200, device=device)
        scores[device] = ev.evaluate([w, torch.ones_like(w)], seed=5)
        if device == "cuda":
            assert next(ev.ntk_net.parameters()).is_cuda and ev.region_x[0].is_cuda
            assert ev.settings()["device"] == "cuda"
    for (k_cpu, r_cpu), (k_gpu, r_gpu) in zip(scores["cpu"], scores["cuda"]):
        assert k_gpu == pytest.approx(k_cpu, rel=0.05)
        assert abs(r_gpu - r_cpu) <= 0.02 * r_cpu


@needs_cuda
@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_the_gpu_ntk_equals_the_plain_per_sample_loop(space):
    """On a GPU the samples are walked one by one (the DARTS proxies batch them on the CPU): the reference's G G^T."""
    from nas_core import proxies

    data = load_dataset("synthetic", 0)
    ev = ProxyEvaluator(data.x_train, data.num_classes, ntk_batch=14, region_samples=50, space=space, device="cuda")
    xb = ev.reinit(3)
    sp = proxies.proxy_networks(space)
    w = genotype_weights(parse_genotype(ARCH)) if space == "nb201" else None
    if w is None:
        from nas_core.proxies.darts import genotype_weights as darts_weights
        from nas_core.spaces.darts_genotype import PRESETS

        w = darts_weights(PRESETS["DARTS_V2"])
    args = tuple(a.to("cuda") for a in sp.args(w))
    fast = sp.ntk(ev.ntk_net, xb, *args)
    assert fast == pytest.approx(sp.ntk_reference(ev.ntk_net, xb, *args), rel=1e-3)


@needs_no_cuda
def test_a_queued_run_whose_worker_lacks_the_gpu_fails_naming_device(db):
    """Queued from a machine that may have the GPU; the worker here has none: the run fails with a readable
    message naming the setting, and the other experiments are untouched."""
    from nas_service.jobs import run_job
    from storage import repo

    ok = repo.create_experiment(_config("random", "nb201", {}, {"trials": 1}, "cpu").to_dict(), name="cpu run")
    bad = repo.create_experiment(_config("random", "nb201", {}, {"trials": 1}, "cuda").to_dict(), name="gpu run")
    out = run_job(bad, db)
    assert out["status"] == "failed"
    exp = repo.get_experiment(bad)
    assert exp["status"] == "failed" and "device: cuda asked for" in exp["error"], exp["error"]
    assert exp["device"] is None  # no device was used
    assert repo.get_experiment(ok)["status"] == "queued"
    assert run_job(ok, db)["status"] == "succeeded"
