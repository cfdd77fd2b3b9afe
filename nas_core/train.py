"""Training a stand-alone network from scratch and evaluating it; shared helpers for the search loops.

Final training follows NAS-Bench-201's recipe scaled to the run's epochs: SGD with Nesterov momentum
0.9, weight decay 5e-4, cosine learning rate to 0, cross-entropy; accuracy is measured on the
held-out test split, never seen by the search.

Options for the DARTS-style evaluation recipe (all off by default, so NB201 training is unchanged):
an auxiliary head's loss added with ``auxiliary_weight`` (0.4, DARTS) when the network returns
``(logits, aux_logits)`` in training mode; drop path with the probability ramped linearly per epoch
(``drop_path * epoch / epochs``, DARTS ``cnn/train.py``) through the network's ``drop_path_prob``;
``random_crop_flip`` on training batches when the data set asks for augmentation (``augment=True``),
then ``cutout`` (length in pixels) after it, both from nas_core/augment.py.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.augment import cutout as cutout_batch
from nas_core.augment import random_crop_flip
from nas_core.data import Dataset, batches, load_dataset
from nas_core.errors import Cancelled, ConfigError
from nas_core.reporting import MemoryReporter, Reporter


def fmt(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Put a 4-D batch in the memory format the model was converted to."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def prepare_model(model: nn.Module, channels_last: bool, device: torch.device | str = "cpu") -> nn.Module:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def cosine_lr(base: float, minimum: float, step: int, total: int) -> float:
    """Cosine annealing from ``base`` to ``minimum`` over ``total`` steps (as torch's scheduler)."""
    if total <= 1:
        return base
    return minimum + 0.5 * (base - minimum) * (1 + math.cos(math.pi * min(step, total) / total))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256, channels_last: bool = False
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) over a split, in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for xb, yb in batches(x, y, batch_size, shuffle=False):
        logits = model(fmt(xb, channels_last))
        total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    n = max(1, len(y))
    return total_loss / n, correct / n


@dataclass
class EpochMeter:
    """One epoch's running training loss and accuracy (batch-size weighted): the numbers of its epoch row."""

    seen: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = len(y)
        self.seen += n
        self.loss_sum += float(loss.detach()) * n
        self.correct += int((logits.detach().argmax(1) == y).sum())

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def metrics(self, val_loss: float, val_acc: float, lr: float, **extra: float) -> dict[str, float]:
        """The Reporter.epoch metrics: train loss/acc so far, the given validation figures, lr, wall time."""
        n = max(1, self.seen)
        return {"train_loss": self.loss_sum / n, "train_acc": self.correct / n, "val_loss": val_loss,
                "val_acc": val_acc, "lr": lr, "seconds": self.seconds, **extra}  # fmt: skip


def train_network(
    model: nn.Module,
    data: Dataset,
    epochs: int,
    reporter: Reporter,
    lr: float = 0.05,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    grad_clip: float = 5.0,
    seed: int = 0,
    channels_last: bool = True,
    progress_span: tuple[float, float] = (0.0, 1.0),
    auxiliary_weight: float = 0.4,
    drop_path: float = 0.0,
    cutout: int = 0,
) -> dict[str, float]:
    """Train from scratch, report every epoch, return final validation and test loss/accuracy.

    ``auxiliary_weight`` applies only to networks that return ``(logits, aux_logits)`` in training
    mode; ``drop_path`` (max probability) needs a network with a ``drop_path_prob`` attribute;
    ``cutout`` > 0 cuts one hole of that side per training image.
    """
    if not 0.0 <= drop_path < 1.0:
        raise ConfigError("drop_path", f"must be in [0, 1), got {drop_path}")
    if drop_path > 0 and not hasattr(model, "drop_path_prob"):
        raise ConfigError("drop_path", f"{type(model).__name__} has no drop path (the DARTS space has)")
    if cutout < 0:
        raise ConfigError("cutout", f"must be >= 0 pixels, got {cutout}")
    if auxiliary_weight < 0:
        raise ConfigError("auxiliary_weight", f"must be >= 0, got {auxiliary_weight}")
    augment = bool(getattr(data, "augment", False))
    model = prepare_model(model, channels_last, data.device)  # the data's device: the run moved it there
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    gen = torch.Generator().manual_seed(seed + 7)
    aug_gen = torch.Generator().manual_seed(seed + 11)  # its own stream: the batch order stays as without it
    steps_per_epoch = max(1, math.ceil(len(data.y_train) / batch_size))
    total = epochs * steps_per_epoch
    step = 0
    lo, hi = progress_span
    for epoch in range(epochs):
        meter = EpochMeter()
        if drop_path > 0:
            model.drop_path_prob = drop_path * epoch / epochs
        for xb, yb in batches(data.x_train, data.y_train, batch_size, gen):
            if reporter.should_stop():
                raise Cancelled("cancel requested")
            set_lr(opt, cosine_lr(lr, 0.0, step, total))
            if augment:
                xb = random_crop_flip(xb, aug_gen)
            if cutout > 0:
                xb = cutout_batch(xb, aug_gen, cutout)
            out = model(fmt(xb, channels_last))
            if isinstance(out, tuple):  # (logits, aux_logits): a DARTS network with its auxiliary head
                logits, aux_logits = out
                loss = F.cross_entropy(logits, yb) + auxiliary_weight * F.cross_entropy(aux_logits, yb)
            else:
                logits = out
                loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            step += 1
            meter.add(loss, logits, yb)
        val_loss, val_acc = evaluate(model, data.x_val, data.y_val, channels_last=channels_last)
        extra = {"drop_path_prob": float(model.drop_path_prob)} if drop_path > 0 else {}
        reporter.epoch("train", epoch, meter.metrics(val_loss, val_acc, opt.param_groups[0]["lr"], **extra))
        reporter.progress(lo + (hi - lo) * (epoch + 1) / epochs, "train", epoch + 1, epochs)
    val_loss, val_acc = evaluate(model, data.x_val, data.y_val, channels_last=channels_last)
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test, channels_last=channels_last)
    model.to(memory_format=torch.contiguous_format)
    return {"val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc}


def train_genotype(
    space: str,
    genotype: str,
    dataset: str = "digits",
    epochs: int = 10,
    seed: int = 0,
    channels: int = 16,
    cells_per_stage: int = 1,
    lr: float = 0.05,
    batch_size: int = 64,
    reporter: Reporter | None = None,
    threads: int | None = None,
    *,
    layers: int | None = None,
    auxiliary: bool = False,
    auxiliary_weight: float = 0.4,
    drop_path: float = 0.0,
    cutout: int = 0,
    device: str = "auto",
) -> dict[str, Any]:
    """Train one architecture from scratch on a data set; the CLI's ``train`` and notebooks use it.

    ``device`` is the config's setting (auto, cpu, cuda, cuda:N, mps); params, MACs and latency are measured
    on the CPU after training, as the pipeline's.

    ``layers`` and ``auxiliary`` are network options of spaces that have them (DARTS); a space
    without them refuses them with a ConfigError naming the option.
    """
    from nas_core.devices import device_text, resolve_device
    from nas_core.metrics import latency_seconds, profile_network
    from nas_core.spaces import get_space

    latency_s = latency_seconds()  # a bad NAS_LATENCY_SECONDS fails here, not after the training
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    sp = get_space(space)
    g = sp.coerce(genotype)
    options = network_options(sp, layers=layers, auxiliary=auxiliary)
    data = load_dataset(dataset, seed).to(dev)
    model = sp.build_network(g, data.num_classes, data.input_shape, channels, cells_per_stage, **options)
    rep = reporter or MemoryReporter()
    t0 = time.perf_counter()
    res = train_network(
        model,
        data,
        epochs,
        rep,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        auxiliary_weight=auxiliary_weight,
        drop_path=drop_path,
        cutout=cutout,
    )
    out: dict[str, Any] = {
        "space": space,
        "genotype": sp.format(g),
        "dataset": dataset,
        "accuracy": res["test_acc"],
        "accuracy_kind": "test",
        "val_accuracy": res["val_acc"],
        "train_seconds": time.perf_counter() - t0,
        "device": device_text(dev),
        **options,
    }
    if drop_path > 0:
        out["drop_path"] = drop_path
    if cutout > 0:
        out["cutout"] = cutout
    out.update(profile_network(model.cpu(), data.input_shape, min_seconds=latency_s))
    return out


def network_options(space: Any, **requested: Any) -> dict[str, Any]:
    """The requested build options (``None``/``False`` = not requested) the space's ``build_network`` takes.

    A requested option the space does not know raises ConfigError naming it, e.g. ``layers`` for nb201.
    """
    import inspect

    accepted = inspect.signature(space.build_network).parameters
    out: dict[str, Any] = {}
    for name, value in requested.items():
        if value is None or value is False:
            continue
        if name not in accepted:
            raise ConfigError(name, f"the {space.name} space has no {name!r} option")
        out[name] = value
    return out
