"""One experiment from start to finish: search, derive, train from scratch, measure, export.

The worker, the CLI's ``search`` and notebooks all call :func:`run_experiment`; only the reporter
differs. Raises :class:`nas_core.reporting.Cancelled` when the reporter asks to stop.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nas_core.config import ExperimentConfig
from nas_core.data import load_dataset
from nas_core.devices import device_text, resolve_device
from nas_core.export import export_all, sha256
from nas_core.metrics import device_name, latency_seconds, profile_network
from nas_core.reporting import ArchitectureRecord, Reporter
from nas_core.spaces import get_space
from nas_core.strategies import SearchContext, get_strategy
from nas_core.strategies.resume import clear_checkpoint
from nas_core.train import evaluate, train_network
from nas_core.validation import final_network_options


@dataclass
class ExperimentResult:
    """What an experiment produced; the CLI prints it as JSON."""

    status: str
    genotype: str
    accuracy: float | None
    accuracy_kind: str
    params: int | None
    macs: int | None
    latency_ms: float | None
    search_seconds: float
    train_seconds: float
    device: str
    supernet_accuracy: float | None = None
    artifacts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def final_recipe_text(cfg: ExperimentConfig, network: torch.nn.Module) -> str:
    """The final training's DARTS-recipe settings in words for the log ("" when none is used)."""
    parts = []
    options = dict(getattr(network, "build_options", {}))
    if "layers" in options:
        parts.append(f"{options['layers']} cells")
    if options.get("auxiliary"):
        parts.append(f"auxiliary head (loss weight {cfg.final_auxiliary_weight:g})")
    if cfg.final_drop_path > 0:
        parts.append(f"drop path {cfg.final_drop_path:g}")
    if cfg.final_cutout > 0:
        parts.append(f"cutout {cfg.final_cutout}")
    return f" ({', '.join(parts)})" if parts else ""


def run_experiment(
    config: ExperimentConfig,
    reporter: Reporter,
    replay: dict[tuple[int, str], tuple] | None = None,
    resume: bool = False,
) -> ExperimentResult:
    """Run the whole experiment described by ``config``, reporting through ``reporter``.

    ``replay``: the finished trials of an earlier attempt, which a resumed multi-trial search reuses.
    ``resume``: a one-shot search goes on from its last checkpoint in ``reporter.workdir`` (if any).
    """
    cfg = config.validated()
    latency_s = latency_seconds()  # a bad NAS_LATENCY_SECONDS fails here, not after the search
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)  # a GPU this machine lacks fails here, naming `device`
    reporter.workdir.mkdir(parents=True, exist_ok=True)
    strategy = get_strategy(cfg.strategy)
    space = get_space(cfg.space)
    data = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction,
                        image_size=cfg.image_size, max_train_per_class=cfg.max_train_per_class).to(device)  # fmt: skip
    reporter.log(f"data: {data.summary()}")
    where = f"{cfg.threads} thread(s) on {device_name(device)}" if device.type == "cpu" else f"on {device_text(device)}"
    reporter.log(f"strategy {strategy.label} on {space.label}; {where}")
    final_options = final_network_options(space, cfg.final_layers, cfg.final_auxiliary)

    search_units = strategy.search_units(cfg)
    final_units = 0.0 if strategy.trains_network else float(cfg.final_epochs)
    split = search_units / (search_units + final_units)
    ctx = SearchContext(cfg, space, data, reporter, device, progress_span=(0.0, split), replay=dict(replay or {}),
                        resume=resume)  # fmt: skip
    if resume and not strategy.resumable:
        reporter.log(f"{strategy.label} keeps no checkpoints: the resumed run starts its search over", "warning")
    t0 = time.perf_counter()
    outcome = strategy.search(ctx)
    search_seconds = time.perf_counter() - t0
    reporter.log(f"search finished in {search_seconds:.1f} s: {outcome.genotype}")
    reporter.flush()

    seed_everything(cfg.seed)
    t1 = time.perf_counter()
    if outcome.network is not None:
        net = outcome.network.to(device)  # a network the search rebuilt (AtomNAS's shrunk one) may be on the CPU
        _, accuracy = evaluate(net, data.x_test, data.y_test, channels_last=cfg.channels_last)
        kind = "test"
        reporter.log(f"{strategy.label} trained its network during the search: no retraining; "
                     f"test accuracy {accuracy:.4f}")  # fmt: skip
    elif cfg.final_epochs > 0:
        net = space.build_network(
            outcome.genotype, data.num_classes, data.input_shape, cfg.final_channels, cfg.cells_per_stage,
            **final_options,
        )  # fmt: skip
        reporter.log(
            f"training the derived architecture from scratch for {cfg.final_epochs} epochs{final_recipe_text(cfg, net)}"
        )
        res = train_network(
            net,
            data,
            cfg.final_epochs,
            reporter,
            lr=cfg.final_lr,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            channels_last=cfg.channels_last,
            progress_span=(split, 1.0),
            auxiliary_weight=cfg.final_auxiliary_weight,
            drop_path=cfg.final_drop_path,
            cutout=cfg.final_cutout,
        )
        accuracy, kind = res["test_acc"], "test"
        reporter.log(f"final network: test accuracy {accuracy:.4f} (val {res['val_acc']:.4f})")
    else:
        net = space.build_network(
            outcome.genotype, data.num_classes, data.input_shape, cfg.final_channels, cfg.cells_per_stage,
            **final_options,
        )  # fmt: skip
        accuracy, kind = outcome.accuracy, outcome.accuracy_kind
    train_seconds = time.perf_counter() - t1

    net = net.cpu()  # counted, timed and exported on the CPU whatever it trained on
    prof = profile_network(net, data.input_shape, threads=1, min_seconds=latency_s)
    reporter.log(
        f"params {prof['params']:,}, MACs {prof['macs'] / 1e6:.3f} M, latency {prof['latency_ms']:.3f} ms "
        f"(batch 1, {prof['latency_threads']} thread, {prof['latency_device']})"
    )
    paths = export_all(
        net,
        space.name,
        outcome.genotype,
        cfg.to_dict(),
        data.input_shape,
        reporter.workdir / "export",
        num_classes=data.num_classes,
        channels=cfg.final_channels,
        cells_per_stage=cfg.cells_per_stage,
        log=lambda msg: reporter.log(msg, "warning"),
    )
    for kind_name, path in paths.items():
        reporter.artifact(kind_name, path, sha256(path))
    reporter.architecture(
        ArchitectureRecord(
            genotype=outcome.genotype,
            space=space.name,
            accuracy=accuracy,
            accuracy_kind=kind,
            params=prof["params"],
            macs=prof["macs"],
            latency_ms=prof["latency_ms"],
            latency_threads=prof["latency_threads"],
            latency_device=prof["latency_device"],
            origin="final" if cfg.final_epochs > 0 or outcome.network is not None else "search",
            checkpoint_path=paths.get("checkpoint"),
            ntk_cond=outcome.extra.get("ntk_cond"),
            linear_regions=outcome.extra.get("linear_regions"),
            extra={
                "supernet_accuracy": outcome.accuracy,
                "search_seconds": search_seconds,
                "train_seconds": train_seconds,
                **outcome.extra,
            },
        )
    )
    reporter.progress(1.0, "done", cfg.final_epochs, cfg.final_epochs)
    reporter.flush()
    clear_checkpoint(reporter.workdir)  # the search's checkpoint served its purpose once the result is stored
    return ExperimentResult(
        status="succeeded",
        genotype=outcome.genotype,
        accuracy=accuracy,
        accuracy_kind=kind,
        params=prof["params"],
        macs=prof["macs"],
        latency_ms=prof["latency_ms"],
        search_seconds=search_seconds,
        train_seconds=train_seconds,
        device=device_name(device),
        supernet_accuracy=outcome.accuracy,
        artifacts=paths,
    )
