"""Data sets held as in-memory tensors, with stratified, seeded train/validation/test splits.

The default is scikit-learn's bundled digits (real 8x8 images, offline, fast on a CPU); ``synthetic``
is a learnable, class-conditional pattern set for tests. Nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from nas_core.config import ConfigError

DATASETS: dict[str, str] = {
    "digits": "scikit-learn's bundled handwritten digits (1797 images, 1x8x8, 10 classes)",
    "synthetic": "Synthetic class-conditional patterns (1200 images, 3x8x8, 10 classes), for tests",
}


@dataclass
class Dataset:
    """Normalised tensors for the three splits; the bi-level search uses train for w, val for alpha."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def summary(self) -> str:
        c, h, w = self.input_shape
        return (
            f"{self.name}: {len(self.y_train)} train / {len(self.y_val)} val / {len(self.y_test)} test, "
            f"{c}x{h}x{w}, {self.num_classes} classes"
        )


def parse_dataset(spec: str) -> tuple[str, str | None]:
    """Split ``kind[:path]`` (e.g. ``cifar10:/data/cifar``) into kind and optional folder."""
    spec = (spec or "").strip()
    if ":" in spec:
        kind, root = spec.split(":", 1)
        return kind.strip().lower(), root.strip() or None
    return spec.lower(), None


def _raw(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = d.images.astype(np.float32)[:, None, :, :] / 16.0
        return x, d.target.astype(np.int64)
    if kind == "synthetic":
        rng = np.random.default_rng(12345)  # fixed prototypes: the task is the same for every seed
        protos = rng.normal(0, 1, size=(10, 3, 8, 8)).astype(np.float32)
        rng = np.random.default_rng(seed + 1)
        y = np.repeat(np.arange(10), 120)
        x = protos[y] + rng.normal(0, 1.0, size=(len(y), 3, 8, 8)).astype(np.float32)
        return x, y.astype(np.int64)
    raise ConfigError("dataset", f"unknown data set {kind!r}; choose one of {', '.join(DATASETS)}")


def _stratified_split(
    y: np.ndarray, fractions: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices for train / val / test, stratified by class and seeded."""
    rng = np.random.default_rng(seed)
    tr, va, te = [], [], []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n_val = max(1, int(round(len(idx) * fractions[0])))
        n_test = max(1, int(round(len(idx) * fractions[1])))
        va.extend(idx[:n_val])
        te.extend(idx[n_val : n_val + n_test])
        tr.extend(idx[n_val + n_test :])
    return (np.sort(np.array(tr)), np.sort(np.array(va)), np.sort(np.array(te)))


def check_dataset(spec: str) -> None:
    """Refuse an unusable data set before anything is queued (raises ConfigError naming the problem)."""
    kind, _root = parse_dataset(spec)
    if kind not in DATASETS:
        raise ConfigError("dataset", f"unknown data set {spec!r}; choose one of {', '.join(DATASETS)}")


def load_dataset(spec: str, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Dataset:
    """Load, split (stratified, seeded) and normalise with statistics of the training split only."""
    kind, _root = parse_dataset(spec)
    check_dataset(spec)
    x, y = _raw(kind, seed)
    tr, va, te = _stratified_split(y, (val_fraction, test_fraction), seed)
    mean = x[tr].mean(axis=(0, 2, 3), keepdims=True)
    std = x[tr].std(axis=(0, 2, 3), keepdims=True) + 1e-6
    x = (x - mean) / std

    def t(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.ascontiguousarray(x[idx])), torch.from_numpy(y[idx])

    (xtr, ytr), (xva, yva), (xte, yte) = t(tr), t(va), t(te)
    return Dataset(kind, xtr, ytr, xva, yva, xte, yte, int(y.max()) + 1)


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches over in-memory tensors (no DataLoader overhead for data that fits in memory)."""
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


def endless_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Reshuffled batches forever: the validation stream of a bi-level search."""
    while True:
        yield from batches(x, y, batch_size, generator)
