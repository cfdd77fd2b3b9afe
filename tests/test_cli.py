"""``python -m nas_core``: JSON output, exit codes, and one-line errors instead of tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas_service.cli import main
from storage import repo

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = [
    "--strategy", "darts", "--space", "nb201", "--dataset", "synthetic", "--epochs", "1", "--final-epochs", "1",
    "--set", "batch_size=64", "--set", "channels=2", "--set", "final_channels=2", "--set", "threads=1",
    "--set", "val_fraction=0.35", "--set", "test_fraction=0.35",
]  # fmt: skip
CHEAPEST = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh process (environment from the ``db`` fixture) and stop it if it hangs."""
    env = os.environ.copy()
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas_core", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _last_json(text: str) -> object:
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.slow
def test_search_json_last_line(db: str) -> None:
    res = _cli("search", *TINY_FLAGS, "--name", "cli-run", "--json")
    assert res.returncode == 0, res.stderr
    out = _last_json(res.stdout)
    assert set(out) >= {"experiment_id", "status", "genotype", "accuracy", "macs", "params", "latency_ms"}
    assert out["status"] == "succeeded"
    assert 0.0 <= out["accuracy"] <= 1.0 and out["macs"] > 0 and out["params"] > 0 and out["latency_ms"] > 0
    exp = repo.get_experiment(out["experiment_id"])
    assert exp["name"] == "cli-run" and exp["status"] == "succeeded" and exp["genotype"] == out["genotype"]
    assert exp["config"]["threads"] == 1 and exp["config"]["epochs"] == 1
    assert not repo.alphas_df(out["experiment_id"]).empty
    assert len(repo.architectures_df([out["experiment_id"]])) == 1
    assert "search epoch" in res.stderr  # the log goes to stderr, stdout stays parseable


def test_bad_input_is_one_line_exit_2_in_a_real_process(db: str) -> None:
    res = _cli("show", "999", "--json", timeout=60)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip() == "error: no experiment with id 999"
    assert res.stdout == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["submit", "--epochs", "0"], "epochs"),
        (["submit", "--strategy", "nope"], "strategy"),
        (["submit", "--dataset", "nope"], "dataset"),
        (["submit", "--set", "bogus=1"], "bogus"),
        (["submit", "--set", "w_lr=abc"], "w_lr"),
        (["submit", "--set", "novalue"], "novalue"),
        (["show", "999"], "no experiment with id 999"),
        (["cancel", "999"], "no experiment with id 999"),
        (["profile", "--genotype", "|bogus~0|"], "--genotype"),
        (["profile", "--genotype", CHEAPEST, "--input", "3x32"], "--input"),
        (["profile", "--space", "nope", "--genotype", CHEAPEST], "--space"),
        (["train", "--genotype", "|conv~0|+", "--epochs", "1"], "--genotype"),
        (["train", "--genotype", CHEAPEST, "--dataset", "nope"], "dataset"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    db: str, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert repo.list_experiments().empty  # nothing was queued


def test_bad_database_url_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--db", "nosuchdialect://x"]) == 2
    assert capsys.readouterr().err.startswith("error: database: ")
    missing = tmp_path / "missing" / "dir"
    missing.parent.write_text("a file where a folder should be")
    assert main(["list", "--db", f"sqlite:///{missing / 'nas.db'}"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_non_integer_id_is_a_usage_error(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["show", "abc"])
    assert info.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_submit_list_show_cancel_json(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", *TINY_FLAGS, "--name", "queued-one", "--json"]) == 0
    submitted = _last_json(capsys.readouterr().out)
    exp_id = submitted["experiment_id"]
    assert submitted["status"] == "queued"

    assert main(["list", "--json"]) == 0
    rows = _last_json(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [exp_id]
    assert rows[0]["name"] == "queued-one" and rows[0]["status"] == "queued" and rows[0]["finished_at"] is None
    assert set(rows[0]) == set(repo.EXPERIMENT_COLUMNS)

    assert main(["show", str(exp_id), "--json"]) == 0
    shown = _last_json(capsys.readouterr().out)
    assert shown["config"]["dataset"] == "synthetic" and shown["architectures"] == [] and shown["epochs"] == []

    assert main(["cancel", str(exp_id), "--json"]) == 0
    assert _last_json(capsys.readouterr().out) == {
        "experiment_id": exp_id,
        "cancel_requested": True,
        "status": "cancelled",
    }
    assert main(["cancel", str(exp_id), "--json"]) == 0
    assert _last_json(capsys.readouterr().out)["cancel_requested"] is False

    assert main(["list"]) == 0
    assert "queued-one" in capsys.readouterr().out
    assert main(["show", str(exp_id)]) == 0
    assert "cancelled" in capsys.readouterr().out


def test_strategies_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["strategies", "--json"]) == 0
    doc = _last_json(capsys.readouterr().out)
    by_name = {s["name"]: s for s in doc["strategies"]}
    assert {"darts", "darts-2nd", "single-darts"} <= set(by_name)
    params = {p["name"]: p for p in by_name["darts"]["params"]}
    assert params["arch_lr"]["default"] == pytest.approx(3e-4) and params["arch_lr"]["kind"] == "float"
    assert "epochs" in {p["name"] for p in doc["general"]}
    assert main(["strategies"]) == 0
    assert "single-darts" in capsys.readouterr().out


def test_profile_json_matches_the_benchmark_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    # ALGORITHMS.md: the NB201 CIFAR-10 skeleton (C=16, N=5) with the cheapest cell has 7.78305 M MACs, 73,306 params
    assert main(["profile", "--space", "nb201", "--genotype", CHEAPEST, "--json"]) == 0
    out = _last_json(capsys.readouterr().out)
    assert (out["params"], out["macs"]) == (73_306, 7_783_050)
    assert out["latency_ms"] > 0 and out["latency_threads"] == 1
    assert main(["profile", "--genotype", CHEAPEST, "--channels", "4", "--cells-per-stage", "1", "--input", "1x8x8",
                 "--classes", "3", "--json"]) == 0  # fmt: skip
    small = _last_json(capsys.readouterr().out)
    assert small["params"] < out["params"] and small["input"] == [1, 8, 8]


def test_train_json(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--space", "nb201", "--genotype", "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+"
            "|skip_connect~0|none~1|avg_pool_3x3~2|", "--dataset", "synthetic", "--epochs", "1", "--channels", "2",
            "--batch-size", "64", "--threads", "1", "--json"]  # fmt: skip
    import torch

    threads = torch.get_num_threads()
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)  # --threads sets it for the whole process; leave later tests alone
    out = _last_json(capsys.readouterr().out)
    assert 0.0 <= out["accuracy"] <= 1.0 and out["params"] > 0 and out["macs"] > 0 and out["latency_ms"] > 0
