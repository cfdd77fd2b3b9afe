"""Data sets held as in-memory tensors, with stratified, seeded train/validation/test splits.

The default is scikit-learn's bundled digits (real 8x8 images, offline, fast on a CPU); ``synthetic``
is a learnable, class-conditional pattern set for tests. ``cifar10:/path``, ``cifar100:/path`` and
``imagefolder:/path`` read real images from a local folder (readers in :mod:`nas_core.data_readers`).
Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nas_core import data_readers
from nas_core.errors import ConfigError

DATASETS: dict[str, str] = {
    "digits": "scikit-learn's bundled handwritten digits (1797 images, 1x8x8, 10 classes)",
    "synthetic": "Synthetic class-conditional patterns (1200 images, 3x8x8, 10 classes), for tests",
    "cifar10": "CIFAR-10 (50000 train + 10000 test, 3x32x32, 10 classes); needs a folder with the python "
    "version (cifar-10-batches-py)",
    "cifar100": "CIFAR-100 (50000 train + 10000 test, 3x32x32, 100 fine classes); needs a folder with the "
    "python version (cifar-100-python)",
    "imagefolder": "Your images; needs a folder with one sub-folder of images per class (resized to image_size, "
    "32 by default)",
}

#: Kinds read from disk, with the example folder their "needs a folder" message shows.
FOLDER_KINDS: dict[str, str] = {
    "cifar10": "/path/to/cifar-10-batches-py",
    "cifar100": "/path/to/cifar-100-python",
    "imagefolder": "/path/to/folder_with_one_subfolder_per_class",
}

#: Native side length of image-folder data when ``image_size`` is 0.
IMAGEFOLDER_DEFAULT_SIZE = 32
_CHUNK = 4096  # images normalised at a time: bounds the temporary float copy


@dataclass
class Dataset:
    """Normalised tensors for the three splits; the bi-level search uses train for w, val for alpha.

    ``augment`` says whether training should use the standard image augmentation (crop, flip; cutout for
    final training): true for natural-image sets, false for the tiny built-in ones. ``mean``/``std`` are the
    per-channel statistics used (computed on the training split, in units of the raw pixel scale: [0, 1]
    for 8-bit images).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: bool = False
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    classes: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: torch.device | str) -> Dataset:
        """The same splits on ``device`` (self when they are there already): a run moves its data once, whole."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return dataclasses.replace(self, **moved)

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


def absolute_dataset(spec: str) -> str:
    """``kind:folder`` with the folder made absolute (and ``~`` expanded), so a worker started elsewhere finds it."""
    kind, root = parse_dataset(spec)
    if root is None:
        return (spec or "").strip()
    return f"{kind}:{os.path.abspath(os.path.expanduser(root))}"


def _builtin(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
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
    y: np.ndarray,
    fractions: tuple[float, float],
    seed: int,
    max_pool_per_class: int = 0,
    classes: tuple[str, ...] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices for train / val / test, stratified by class and seeded.

    ``fractions`` are (val, test) of each class; a test fraction of 0 means the data set has an official
    test set and every image is in the train + validation pool. ``max_pool_per_class`` caps that pool
    (a seeded random subset per class; validation keeps its share of it).
    """
    val_fraction, test_fraction = fractions
    rng = np.random.default_rng(seed)
    tr, va, te = [], [], []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n = len(idx)
        n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
        pool = n - n_test
        if 0 < max_pool_per_class < pool:
            pool = max_pool_per_class
            n_val = max(1, int(round(pool * val_fraction / (1.0 - test_fraction))))
        else:
            n_val = max(1, int(round(n * val_fraction)))
        if n_val >= pool and pool == max_pool_per_class:
            raise ConfigError("max_train_per_class", f"must be at least 2 (one training and one validation image "
                              f"per class), got {max_pool_per_class}")  # fmt: skip
        if n_val >= pool:
            name = classes[cls] if cls < len(classes) else str(cls)
            raise ConfigError(
                "dataset", f"class {name!r} has only {n} image(s): too few for separate training, validation"
                + (" and test" if test_fraction > 0 else "") + " images"
            )  # fmt: skip
        va.extend(idx[:n_val])
        te.extend(idx[n_val : n_val + n_test])
        tr.extend(idx[n_val + n_test : n_test + pool])
    return (np.sort(np.array(tr, dtype=np.int64)), np.sort(np.array(va, dtype=np.int64)),
            np.sort(np.array(te, dtype=np.int64)))  # fmt: skip


def input_shape(spec: str, image_size: int = 0) -> tuple[int, int, int]:
    """(channels, height, width) the data set loads as, without loading it: what config checks need."""
    kind, _ = _check_spec(spec)
    channels, side = {"digits": (1, 8), "synthetic": (3, 8), "imagefolder": (3, IMAGEFOLDER_DEFAULT_SIZE)}.get(
        kind, (3, 32)
    )
    side = image_size or side
    return channels, side, side


def check_dataset(spec: str) -> None:
    """Refuse an unusable data set before anything is queued (raises ConfigError naming the problem).

    Folders are checked in full (CIFAR batches unpickled, every image header opened) and the result is
    cached by path and modification times, so pressing Launch again is cheap.
    """
    kind, root = _check_spec(spec)
    if kind in data_readers.CIFAR_LAYOUTS:
        data_readers.check_cifar(kind, root or "")
    elif kind == "imagefolder":
        data_readers.check_image_folder(root or "")


def _check_spec(spec: str) -> tuple[str, str | None]:
    """Known kind, with a folder exactly when the kind reads one."""
    kind, root = parse_dataset(spec)
    if kind not in DATASETS:
        raise ConfigError("dataset", f"unknown data set {spec!r}; choose one of {', '.join(DATASETS)}")
    if kind in FOLDER_KINDS and root is None:
        raise ConfigError("dataset", f"{kind} needs a folder: {kind}:{FOLDER_KINDS[kind]}")
    if kind not in FOLDER_KINDS and root is not None:
        raise ConfigError(
            "dataset", f"{kind} is built in and reads no folder (got {root!r}): leave the data folder empty, "
            f"or pick one of {', '.join(FOLDER_KINDS)}"
        )  # fmt: skip
    return kind, root


def _channel_stats(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of ``x * scale``; 8-bit images are summed exactly, chunk by chunk."""
    if np.issubdtype(x.dtype, np.floating):  # the small built-in sets, computed as they always were
        return x.mean(axis=(0, 2, 3)) * scale, x.std(axis=(0, 2, 3)) * scale + 1e-6
    c = x.shape[1]
    total, total_sq, count = np.zeros(c, np.int64), np.zeros(c, np.int64), 0
    for start in range(0, len(x), _CHUNK):  # exact integer sums: 2x faster than float64 and no rounding
        part = x[start : start + _CHUNK].transpose(1, 0, 2, 3).reshape(c, -1).astype(np.int32)
        total += part.sum(axis=1, dtype=np.int64)
        total_sq += np.einsum("ij,ij->i", part, part, dtype=np.int64)
        count += part.shape[1]
    total, total_sq = total * scale, total_sq * scale**2
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def _normalised(x: np.ndarray, scale: float, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """float32 tensor of ``(x * scale - mean) / std``, filled chunk by chunk (one full float copy only)."""
    out = torch.empty(x.shape, dtype=torch.float32)
    m, s = mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)
    for start in range(0, len(x), _CHUNK):
        part = x[start : start + _CHUNK].astype(np.float32)
        if scale != 1.0:
            part *= np.float32(scale)
        part -= m
        part /= s
        out[start : start + _CHUNK] = torch.from_numpy(part)
    return out


def _resize_float(x: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear resize of float NCHW arrays (the built-in sets, e.g. digits to 32x32)."""
    if x.shape[2:] == (size, size):
        return x
    t = torch.nn.functional.interpolate(
        torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return t.numpy()


def load_dataset(
    spec: str,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    *,
    image_size: int = 0,
    max_train_per_class: int = 0,
) -> Dataset:
    """Load, split (stratified, seeded) and normalise with statistics of the training split only.

    Data sets with an official test set (CIFAR) keep it and carve validation out of the training set by
    ``val_fraction``; the others carve both out of all images. ``image_size`` (0 = native; image folders
    then use 32) resizes; ``max_train_per_class`` (0 = all) caps each class's train + validation pool.
    """
    kind, root = _check_spec(spec)
    if image_size < 0 or 0 < image_size < 4:
        raise ConfigError("image_size", f"must be 0 (the data set's own size) or at least 4 (got {image_size})")
    if max_train_per_class < 0:
        raise ConfigError("max_train_per_class", f"must be 0 (all) or positive (got {max_train_per_class})")
    cap = max_train_per_class
    if kind in data_readers.CIFAR_LAYOUTS:
        raw = data_readers.read_cifar(kind, root or "")
        tr, va, _ = _stratified_split(raw.y, (val_fraction, 0.0), seed, cap, raw.classes)
        assert raw.x_test is not None and raw.y_test is not None
        xs = [raw.x[tr], raw.x[va], raw.x_test]
        ys = [raw.y[tr], raw.y[va], raw.y_test]
        classes, num_classes, scale, augment = raw.classes, len(raw.classes), 1 / 255, True
        del raw
        if image_size:
            xs = [data_readers.resize_uint8(x, image_size) for x in xs]
    elif kind == "imagefolder":
        classes, files, y, _ = data_readers.scan_image_folder(root or "")
        splits = _stratified_split(y, (val_fraction, test_fraction), seed, cap, classes)
        size = image_size or IMAGEFOLDER_DEFAULT_SIZE
        xs = [data_readers.read_images([files[i] for i in idx], size) for idx in splits]
        ys = [y[idx] for idx in splits]
        num_classes, scale, augment = len(classes), 1 / 255, True
    else:
        x, y = _builtin(kind, seed)
        if image_size:
            x = _resize_float(x, image_size)
        splits = _stratified_split(y, (val_fraction, test_fraction), seed, cap)
        xs, ys = [x[idx] for idx in splits], [y[idx] for idx in splits]
        num_classes, scale, augment = int(y.max()) + 1, 1.0, False
        classes = tuple(str(i) for i in range(num_classes))
    mean, std = _channel_stats(xs[0], scale)
    tensors = []
    for i in range(3):
        tensors.append(_normalised(xs[i], scale, mean, std))
        xs[i] = np.empty(0)  # free the raw copy before building the next split
        tensors.append(torch.from_numpy(np.ascontiguousarray(ys[i], dtype=np.int64)))
    return Dataset(
        kind, *tensors, num_classes=num_classes, augment=augment,
        mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std), classes=tuple(classes),
    )  # fmt: skip


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches over in-memory tensors (no DataLoader overhead for data that fits in memory)."""
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)  # the CPU stream, any device
    order = order.to(x.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


class EndlessBatches:
    """Reshuffled batches forever (the validation stream of a bi-level search), with a state to resume from.

    Each pass draws a permutation from ``generator``, as :func:`batches` does; the state is the generator's
    state when the current pass began and how many batches of it were taken, so a restored stream yields
    exactly what the original would have yielded next.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator) -> None:
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator
        self._new_pass()

    def _new_pass(self) -> None:
        """Begin a pass; its permutation is drawn at its first batch, from the generator's state now."""
        self._start, self._taken = self.generator.get_state(), 0
        self._it = batches(self.x, self.y, self.batch_size, self.generator)

    def __iter__(self) -> EndlessBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            out = next(self._it)
        except StopIteration:
            self._new_pass()
            out = next(self._it)
        self._taken += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"start": self._start.clone(), "taken": self._taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go back to the pass that began at ``start`` and skip the batches already taken from it."""
        self.generator.set_state(state["start"])
        self._new_pass()
        for _ in range(int(state["taken"])):
            next(self)


def endless_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator) -> EndlessBatches:
    """Reshuffled batches forever: the validation stream of a bi-level search (see :class:`EndlessBatches`)."""
    return EndlessBatches(x, y, batch_size, generator)
