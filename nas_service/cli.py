"""``python -m nas_core``: everything the dashboard does, headless.

Bad input (an invalid setting, an unknown genotype, an unknown experiment id) is reported as one
line on stderr naming what is wrong, with exit status 2, never as a traceback. Commands that print
data accept ``--json``; their JSON is always the last line of stdout. Heavy imports (PyTorch) happen
inside the commands that need them, so ``list`` and ``cancel`` stay fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from nas_core.config import GENERAL_FIELDS, apply_overrides
from nas_core.errors import ConfigError


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------------------
# output helpers


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "isoformat") and not isinstance(value, str):  # pandas Timestamp
        return None if str(value) == "NaT" else value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is not None and not isinstance(value, (str, int, float, bool)):
        try:
            import pandas as pd

            if pd.isna(value):
                return None
        except (TypeError, ValueError, ImportError):
            pass
        return str(value)
    return value


def _print_json(obj: Any) -> None:
    sys.stdout.flush()
    print(json.dumps(_jsonable(obj), sort_keys=True), flush=True)


def _records(df: Any) -> list[dict[str, Any]]:
    return [_jsonable(r) for r in df.astype(object).where(df.notna(), None).to_dict(orient="records")]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.lower().replace(",", "x").split("x"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise UsageError(f"--input: expected CxHxW such as 3x32x32, got {text!r}")
    return parts  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# commands


#: ``search``/``submit`` flags of the final training's DARTS evaluation recipe: ``train``'s names with the
#: ``--final-`` prefix of ``--final-epochs``, each setting the config field of the same name.
FINAL_RECIPE_FLAGS: tuple[str, ...] = (
    "final_layers",
    "final_auxiliary",
    "final_auxiliary_weight",
    "final_drop_path",
    "final_cutout",
)


def _config_from_args(args: argparse.Namespace) -> Any:
    """Validated ExperimentConfig from search/submit flags (raises ConfigError naming the field)."""
    from nas_core.config import ExperimentConfig
    from nas_core.data import check_dataset

    raw: dict[str, Any] = {"strategy": args.strategy, "space": args.space, "dataset": args.dataset}
    for key in ("epochs", "seed", "final_epochs", "name", "device", *FINAL_RECIPE_FLAGS):
        value = getattr(args, key)
        if value is not None:
            raw[key] = value
    raw = apply_overrides(raw, args.set or [])
    cfg = ExperimentConfig.from_dict(raw)
    check_dataset(cfg.dataset)
    return cfg


def cmd_search(args: argparse.Namespace) -> int:
    from nas_core.devices import resolve_device
    from nas_service.jobs import run_job
    from storage import repo

    cfg = _config_from_args(args)
    resolve_device(cfg.device)  # runs here: a GPU this machine lacks is refused before anything is stored
    repo.init_db(args.db)
    claimed_by = f"cli-{socket.gethostname()}-{os.getpid()}"
    exp_id = repo.create_experiment(cfg.to_dict(), cfg.name, url=args.db, claimed_by=claimed_by)
    print(
        f"experiment {exp_id}: {cfg.strategy} on {cfg.space}/{cfg.dataset}, {cfg.epochs} search epoch(s)",
        file=sys.stderr,
        flush=True,
    )
    try:
        out = run_job(exp_id, args.db, echo=None if args.quiet else sys.stderr)
    except KeyboardInterrupt:
        print(f"experiment {exp_id}: stopped by Ctrl-C", file=sys.stderr)
        return 130
    out = {k: out[k] for k in ("experiment_id", "status", "genotype", "accuracy", "macs", "params", "latency_ms")} | {
        "accuracy_kind": out.get("accuracy_kind"),
        "error": out.get("error"),
    }
    if args.json:
        _print_json(out)
    else:
        print(f"experiment {exp_id}: {out['status']}")
        if out["status"] == "succeeded":
            print(f"  genotype    {out['genotype']}")
            print(f"  accuracy    {_fmt(out['accuracy'])} ({out['accuracy_kind']})")
            print(f"  params      {out['params']:,}" if out["params"] is not None else "  params      -")
            print(f"  MACs        {out['macs']:,}" if out["macs"] is not None else "  MACs        -")
            print(f"  latency_ms  {_fmt(out['latency_ms'])}")
        elif out["error"]:
            print(f"  error: {out['error']}")
    return 0 if out["status"] == "succeeded" else 1


def cmd_submit(args: argparse.Namespace) -> int:
    from storage import repo

    cfg = _config_from_args(args)
    exp_id = repo.create_experiment(cfg.to_dict(), cfg.name, url=args.db)
    started = None
    if args.start_worker:
        from nas_service.worker import ensure_local_worker

        started = ensure_local_worker(args.db)
    alive = not repo.alive_workers(url=args.db).empty
    if args.json:
        _print_json({"experiment_id": exp_id, "status": "queued", "worker_started": started})
    else:
        print(f"queued experiment {exp_id}")
        if started:
            print(f"started a local worker (pid {started})")
    if not alive and not started:
        print("note: no worker is running; start one with `python -m nas_core worker`", file=sys.stderr)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from nas_service.worker import main as worker_main

    if args.poll <= 0:
        raise UsageError("--poll: must be > 0")
    return worker_main(args.db, once=args.once, poll=args.poll, idle_exit=args.idle_exit)


def cmd_list(args: argparse.Namespace) -> int:
    from storage import repo

    df = repo.list_experiments(url=args.db)
    if args.json:
        _print_json(_records(df))
        return 0
    if df.empty:
        print("no experiments yet")
        return 0
    cols = [
        "id",
        "name",
        "strategy",
        "dataset",
        "status",
        "progress",
        "best_accuracy",
        "macs",
        "latency_ms",
        "duration_s",
    ]
    view = df[cols].copy()
    view["progress"] = (view["progress"] * 100).round().astype("Int64").astype(str) + "%"
    print(view.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    return 0


def _experiment_or_exit(exp_id: int, url: str | None) -> dict[str, Any]:
    from storage import repo

    exp = repo.get_experiment(exp_id, url=url)
    if exp is None:
        raise UsageError(f"no experiment with id {exp_id}")
    return exp


def cmd_show(args: argparse.Namespace) -> int:
    from storage import repo

    exp = _experiment_or_exit(args.id, args.db)
    archs = repo.architectures_df([args.id], url=args.db)
    epochs = repo.epochs_df(args.id, url=args.db)
    if args.json:
        _print_json({**exp, "architectures": _records(archs), "epochs": _records(epochs)})
        return 0
    for key in (
        "id",
        "name",
        "status",
        "strategy",
        "space",
        "dataset",
        "progress",
        "phase",
        "epoch",
        "total_epochs",
        "best_accuracy",
        "accuracy_kind",
        "params",
        "macs",
        "latency_ms",
        "genotype",
        "device",
        "created_at",
        "started_at",
        "finished_at",
        "duration_s",
        "message",
        "error",
        "workdir",
    ):
        print(f"{key:14s} {_fmt(exp.get(key))}")
    print(f"{'config':14s} {json.dumps(exp['config'], sort_keys=True)}")
    if not epochs.empty:
        print("\nepochs:")
        print(
            epochs.drop(columns=["experiment_id"]).to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}")
        )
    if exp.get("traceback") and args.traceback:
        print("\n" + exp["traceback"])
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from storage import repo

    _experiment_or_exit(args.id, args.db)
    ok = repo.request_cancel(args.id, url=args.db)
    exp = _experiment_or_exit(args.id, args.db)
    if args.json:
        _print_json({"experiment_id": args.id, "cancel_requested": ok, "status": exp["status"]})
    elif ok:
        print(f"experiment {args.id}: cancel requested (status {exp['status']})")
    else:
        print(f"experiment {args.id} is already {exp['status']}; nothing to cancel")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from storage import repo

    exp = _experiment_or_exit(args.id, args.db)
    job = repo.retry_experiment(args.id, resume=args.resume, url=args.db)
    if job is None:
        raise UsageError(f"experiment {args.id} is {exp['status']}: only a failed, cancelled or interrupted one "
                         "can be queued again")  # fmt: skip
    exp = _experiment_or_exit(args.id, args.db)
    if args.json:
        _print_json({"experiment_id": args.id, "job_id": job, "status": exp["status"], "message": exp["message"]})
    else:
        print(f"experiment {args.id}: {exp['message']}; a worker will take it (python -m nas_core worker)")
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    from nas_core.strategies import STRATEGIES

    docs = []
    for s in STRATEGIES.values():
        doc = s.describe()
        docs.append(doc)
    if args.json:
        _print_json({"strategies": docs, "general": [p.to_dict() for p in GENERAL_FIELDS]})
        return 0
    for doc in docs:
        print(f"{doc['name']}: {doc['label']} (spaces: {', '.join(doc['spaces'])})")
        print(f"    {doc['description']}")
        for p in doc["params"]:
            _print_param(p["name"], p["default"], p["kind"], _bounds(p.get("min"), p.get("max"), p.get("choices")),
                         p.get("help", ""))  # fmt: skip
    print("general settings (--set key=value, or their own flags):")
    for p in GENERAL_FIELDS:
        _print_param(p.name, p.default, p.kind, _bounds(p.minimum, p.maximum, p.choices), p.help)
    return 0


def _print_param(name: str, default: Any, kind: str, bounds: str, help_text: str) -> None:
    print(f"    {name + '=' + str(default):28s} {kind:6s} {bounds:22s} {help_text}")


def _bounds(lo: Any, hi: Any, choices: Sequence[str] | None) -> str:
    if choices:
        return "{" + ",".join(choices) + "}"
    if lo is None and hi is None:
        return ""
    return f"[{_fmt(lo, 6)}, {_fmt(hi, 6)}]"


def _space_and_genotype(space_name: str, text: str) -> tuple[Any, Any]:
    from nas_core.errors import GenotypeError
    from nas_core.spaces import get_space

    try:
        sp = get_space(space_name)
    except (GenotypeError, KeyError) as exc:
        raise UsageError(f"--space: {exc}") from None
    try:
        return sp, sp.parse(text)
    except (GenotypeError, ValueError) as exc:
        raise UsageError(f"--genotype: {exc}") from None


def _network_options(sp: Any, args: argparse.Namespace) -> dict[str, Any]:
    """--layers / --auxiliary for spaces whose networks take them; refused by name elsewhere."""
    from nas_core.train import network_options

    layers = getattr(args, "layers", None)
    if layers is not None and layers < 1:
        raise UsageError("--layers: must be >= 1")
    try:
        return network_options(sp, layers=layers, auxiliary=getattr(args, "auxiliary", False))
    except ConfigError as exc:
        raise UsageError(f"--{exc.field}: {exc.message}") from None


def cmd_profile(args: argparse.Namespace) -> int:
    from nas_core.metrics import profile_network

    sp, g = _space_and_genotype(args.space, args.genotype)
    d_channels, d_cells = sp.profile_defaults  # the space's own evaluation size (SearchSpace.profile_defaults)
    args.channels = d_channels if args.channels is None else args.channels
    args.cells_per_stage = d_cells if args.cells_per_stage is None else args.cells_per_stage
    for name in ("channels", "cells_per_stage", "classes", "threads"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')}: must be >= 1")
    shape = _parse_shape(args.input)
    options = _network_options(sp, args)
    model = sp.build_network(g, args.classes, shape, args.channels, args.cells_per_stage, **options)
    prof = profile_network(model, shape, threads=args.threads)  # eval mode: an auxiliary head is not run
    out = {
        "space": sp.name,
        "genotype": sp.format(g),
        "input": list(shape),
        "classes": args.classes,
        "channels": args.channels,
        "cells_per_stage": args.cells_per_stage,
        **dict(getattr(model, "build_options", {})),
        **prof,
    }
    if args.json:
        _print_json(out)
    else:
        print(f"genotype    {out['genotype']}")
        print(f"params      {out['params']:,}")
        print(f"MACs        {out['macs']:,} ({out['macs'] / 1e6:.2f} M)")
        print(
            f"latency_ms  {out['latency_ms']:.3f} (batch 1, {out['latency_threads']} thread(s), "
            f"{out['latency_device']})"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nas_core.data import check_dataset
    from nas_core.reporting import MemoryReporter
    from nas_core.train import train_genotype
    from storage.settings import runs_dir

    checks = [("epochs", 1), ("channels", 1), ("cells_per_stage", 1), ("batch_size", 2), ("seed", 0)]
    for name, low in checks:
        if getattr(args, name) < low:
            raise UsageError(f"--{name.replace('_', '-')}: must be >= {low}")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads: must be >= 1")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError("--lr: must be a positive number")
    if args.cutout < 0:
        raise UsageError("--cutout: must be >= 0 pixels")
    if not 0.0 <= args.drop_path < 1.0:
        raise UsageError("--drop-path: must be in [0, 1)")
    check_dataset(args.dataset)
    sp, g = _space_and_genotype(args.space, args.genotype)
    options = _network_options(sp, args)
    if sp.benchmark_recipe_only:
        for flag, value in (("--cutout", args.cutout), ("--drop-path", args.drop_path)):
            if value:
                raise UsageError(f"{flag}: not for the {sp.name} space (its benchmark recipe has no {flag[2:]})")
    reporter = MemoryReporter(workdir=runs_dir() / "train", echo=False)
    res = train_genotype(
        sp.name,
        sp.format(g),
        args.dataset,
        epochs=args.epochs,
        seed=args.seed,
        channels=args.channels,
        cells_per_stage=args.cells_per_stage,
        lr=args.lr,
        batch_size=args.batch_size,
        reporter=reporter,
        threads=args.threads,
        drop_path=args.drop_path,
        cutout=args.cutout,
        device=args.device,  # checked (ConfigError naming it) before any data is loaded
        **options,
    )
    if not args.json:
        for phase, epoch, m in reporter.epochs:
            print(
                f"{phase} epoch {epoch + 1}: loss {m.get('train_loss', float('nan')):.4f} "
                f"val_acc {m.get('val_acc', float('nan')):.4f}",
                file=sys.stderr,
            )
    if args.json:
        _print_json(res)
    else:
        print(f"accuracy    {res['accuracy']:.4f} ({res.get('accuracy_kind', 'test')})")
        print(f"params      {res['params']:,}")
        print(f"MACs        {res['macs']:,}")
        print(f"latency_ms  {res['latency_ms']:.3f}")
    return 0


def cmd_proxies(args: argparse.Namespace) -> int:
    import torch

    from nas_core.data import check_dataset, load_dataset
    from nas_core.devices import resolve_device
    from nas_core.proxies import INITS, PROXY_SPACES, genotype_proxies

    checks = [("repeats", 1), ("batch", 2), ("region_samples", 1), ("seed", 0), ("workers", 1)]
    for name, low in checks:
        if getattr(args, name) is not None and getattr(args, name) < low:
            raise UsageError(f"--{name.replace('_', '-')}: must be >= {low}")
    if args.init not in INITS:
        raise UsageError(f"--init: choose from {', '.join(INITS)}")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads: must be >= 1")
    if args.space not in PROXY_SPACES:
        raise UsageError(f"--space: proxies are implemented for {', '.join(PROXY_SPACES)}, not {args.space!r}")
    check_dataset(args.dataset)
    sp, g = _space_and_genotype(args.space, args.genotype)
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.seed)
    scores = genotype_proxies(g, data.x_train, data.num_classes, repeats=args.repeats, ntk_batch=args.batch,
                              region_samples=args.region_samples, init=args.init, seed=args.seed,
                              workers=args.workers, device=str(device))  # fmt: skip
    settings = scores.pop("settings")
    out = {"space": sp.name, "genotype": sp.format(g), "dataset": args.dataset, **scores, "repeats": args.repeats,
           "batch": settings["ntk_batch"], "region_samples": args.region_samples, "init": args.init,
           "seed": args.seed}  # fmt: skip
    if args.json:
        _print_json(out)
    else:
        print(f"genotype        {out['genotype']}")
        print(f"ntk_cond        {out['ntk_cond']:.6g} (mean of {args.repeats}, lower = more trainable)")
        print(f"linear_regions  {out['linear_regions']:.6g} (mean of {args.repeats}, higher = more expressive)")
    return 0


# --------------------------------------------------------------------------------------------------
# parser


DEVICE_HELP = (
    "where training runs: auto (default: the first CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:N, "
    "mps; MACs, exports and latency stay on the CPU"
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="SQLAlchemy database URL (default: env NAS_DB_URL, else sqlite in the runs folder)",
    )

    parser = argparse.ArgumentParser(prog="python -m nas_core", description="NAS Dashboard, headless.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def experiment_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--strategy", default="darts", help="search strategy (see `strategies`)")
        p.add_argument("--space", default="nb201", help="search space")
        p.add_argument("--dataset", default="digits", help="data set: digits, synthetic, ...")
        p.add_argument("--epochs", type=int, help="search epochs")
        p.add_argument("--seed", type=int, help="random seed")
        p.add_argument("--name", help="experiment name")
        p.add_argument("--device", help=DEVICE_HELP)
        p.add_argument(
            "--final-epochs",
            dest="final_epochs",
            type=int,
            help="epochs to train the derived architecture from scratch (0 = skip)",
        )
        recipe = p.add_argument_group(
            "final training: the DARTS evaluation recipe (darts space only)",
            "`train`'s --layers, --auxiliary, --drop-path and --cutout, with the --final- prefix of "
            "--final-epochs. Each sets the config field of its name (final_layers, ...), which --set "
            "final_layers=20 etc. also reach. Other spaces refuse them by name.",
        )
        recipe.add_argument(
            "--final-layers",
            dest="final_layers",
            type=int,
            metavar="N",
            help="cells of the final network (default 0 = the space's: 3 x cells_per_stage + 2; DARTS: 20)",
        )
        recipe.add_argument(
            "--final-auxiliary",
            dest="final_auxiliary",
            action="store_true",
            default=None,
            help="auxiliary head after cell 2*layers//3 in final training only (inputs >= 29x29, e.g. "
            "--set image_size=32); exports leave it out",
        )
        recipe.add_argument(
            "--final-auxiliary-weight",
            dest="final_auxiliary_weight",
            type=float,
            metavar="W",
            help="weight of the auxiliary loss (default 0.4, DARTS); only with --final-auxiliary",
        )
        recipe.add_argument(
            "--final-drop-path",
            dest="final_drop_path",
            type=float,
            metavar="P",
            help="drop-path probability, ramped linearly over the final epochs (default 0 = off; DARTS: 0.2)",
        )
        recipe.add_argument(
            "--final-cutout",
            dest="final_cutout",
            type=int,
            metavar="N",
            help="cutout of N pixels on final-training images (default 0 = off; DARTS: 16)",
        )
        p.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            default=[],
            help="any general setting or strategy parameter; repeatable",
        )
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    p = sub.add_parser("search", parents=[common], help="run one search in the foreground and store it")
    experiment_flags(p)
    p.add_argument("--quiet", action="store_true", help="do not echo the run's log to stderr")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("submit", parents=[common], help="queue a search for a worker")
    experiment_flags(p)
    p.add_argument("--start-worker", action="store_true", help="start a local worker if none is alive")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("worker", parents=[common], help="serve queued jobs")
    p.add_argument("--once", action="store_true", help="run at most one job, then exit (exit at once if none)")
    p.add_argument("--poll", type=float, default=1.0, metavar="S", help="seconds between queue polls")
    p.add_argument(
        "--idle-exit",
        dest="idle_exit",
        type=float,
        default=None,
        metavar="S",
        help="exit after S seconds without a job",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("list", parents=[common], help="list experiments")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[common], help="show one experiment")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p.add_argument("--traceback", action="store_true", help="print the stored traceback of a failed run")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("cancel", parents=[common], help="cancel a queued or running experiment")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("retry", parents=[common], help="queue a failed, cancelled or interrupted experiment again")
    p.add_argument("id", type=int)
    p.add_argument("--resume", action="store_true",
                   help="go on from where it stopped: one-shot searches from their last epoch's checkpoint, "
                        "multi-trial searches reusing their finished trials")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("strategies", help="list strategies with their parameters and defaults")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_strategies)

    def darts_network_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--layers", type=int, default=None, help="darts: number of cells (default 3 x cells-per-stage + 2)"
        )
        p.add_argument(
            "--auxiliary", action="store_true", help="darts: auxiliary head after cell 2*layers//3 (inputs >= 29x29)"
        )

    p = sub.add_parser("profile", help="params, MACs and latency of one architecture, without training")
    p.add_argument("--space", default="nb201")
    p.add_argument(
        "--genotype",
        required=True,
        help="genotype: NB201 '|nor_conv_3x3~0|+...'; darts: a preset (DARTS_V2, ...), Genotype(...) text or JSON",
    )
    p.add_argument("--channels", type=int, default=None, help="initial channels C (default: nb201 16, darts 36)")
    p.add_argument(
        "--cells-per-stage",
        dest="cells_per_stage",
        type=int,
        default=None,
        help="cells per stage N (default: nb201 5, darts 6 = 20 layers)",
    )
    darts_network_flags(p)
    p.add_argument("--input", default="3x32x32", help="input shape CxHxW")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="threads for the latency measurement")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("train", help="train one architecture from scratch and evaluate it")
    p.add_argument("--space", default="nb201")
    p.add_argument("--genotype", required=True)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--cells-per-stage", dest="cells_per_stage", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    darts_network_flags(p)
    p.add_argument("--cutout", type=int, default=0, metavar="N", help="darts: cutout of N pixels (DARTS: 16; 0 = off)")
    p.add_argument(
        "--drop-path",
        dest="drop_path",
        type=float,
        default=0.0,
        metavar="P",
        help="darts: drop-path probability, ramped linearly over the epochs (DARTS: 0.2)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("proxies", help="TE-NAS training-free proxies (NTK condition number, linear regions)")
    p.add_argument("--space", default="nb201")
    p.add_argument("--genotype", required=True)
    p.add_argument("--dataset", default="digits", help="data set the NTK batch and region crops come from")
    p.add_argument("--repeats", type=int, default=3, help="inits (and NTK batches) to average over")
    p.add_argument(
        "--batch", type=int, default=None, help="NTK batch size (default: the reference's, 72 on NB201, 14 on DARTS)"
    )
    p.add_argument(
        "--region-samples", dest="region_samples", type=int, default=1000, help="samples per region batch (3 batches)"
    )
    p.add_argument(
        "--init", default="kaiming", help="kaiming (the paper's intent) or pytorch-default (the reference's)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--workers", type=int, default=1, help="processes scoring the repeats at once, one thread each (default 1)"
    )
    p.add_argument("--device", default="auto", help="where the proxy nets run: auto (default), cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_proxies)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse and dispatch; maps bad input to one stderr line and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "db", None):
        os.environ["NAS_DB_URL"] = args.db  # child processes (worker jobs) use the same database
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"error: invalid setting {exc.field}: {exc.message}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    except OSError as exc:  # e.g. a database or runs folder that cannot be created
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not type(exc).__module__.startswith("sqlalchemy"):
            raise
        # a wrong --db URL or an unreachable database: say so in one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: database: {first}", file=sys.stderr)
        return 2
