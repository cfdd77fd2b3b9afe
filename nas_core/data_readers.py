"""Readers for image data sets on local disk: CIFAR-10/100 (python pickle layout) and ImageFolder trees.

Each reader has a cheap-enough ``check_*`` (run by the Launch page and the CLI before anything is queued,
cached by path and modification times) and a ``read_*`` that returns raw ``uint8`` arrays in NCHW
layout; splitting and normalisation live in :mod:`nas_core.data`. Every refusal is a
``ConfigError("dataset", ...)`` naming the path and the problem. Nothing is downloaded.

The CIFAR batches are pickles; a pickle can run arbitrary code when loaded, so they are read with a
restricted unpickler that only rebuilds numpy arrays, lists, dicts, bytes and numbers.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas_core.errors import ConfigError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR variant keeps its files and labels (as the official python archives ship them)."""

    label: str
    subdir: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)


CIFAR_LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        "CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
        "batches.meta", b"labels", b"label_names", 10,
    ),
    "cifar100": CifarLayout(
        "CIFAR-100", "cifar-100-python", ("train",), "test", "meta", b"fine_labels", b"fine_label_names", 100,
    ),
}  # fmt: skip


def _refuse(message: str) -> ConfigError:
    return ConfigError("dataset", message)


def existing_folder(root: str) -> Path:
    """The folder ``root`` as a Path, refusing a missing path, a file, or an empty folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise _refuse(f"data folder {path} does not exist")
    if not path.is_dir():
        raise _refuse(f"{path} is not a folder")
    try:
        empty = not any(path.iterdir())
    except OSError as exc:
        raise _refuse(f"cannot list data folder {path}: {exc.strerror or exc}") from None
    if empty:
        raise _refuse(f"data folder {path} is empty")
    return path


# ---------------------------------------------------------------------------------------------- CIFAR


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only callables a pickled numpy array needs, under their numpy 1.x and 2.x module names."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles written by Python 3 use it for bytes, limited to latin-1."""
    if encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


class SafeUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only; any other global is refused, never imported."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name}: a CIFAR batch holds only numpy arrays, lists, bytes and numbers"
        )


def safe_unpickle(path: Path) -> Any:
    """Load one pickle file with :class:`SafeUnpickler` (``encoding='bytes'`` as CIFAR's Python 2 pickles need)."""
    with open(path, "rb") as fh:
        return SafeUnpickler(fh, encoding="bytes").load()


def find_cifar_folder(kind: str, root: str) -> Path:
    """The folder holding the batch files: ``root`` itself or its official sub-folder (e.g. cifar-10-batches-py)."""
    layout = CIFAR_LAYOUTS[kind]
    path = existing_folder(root)
    for candidate in (path, path / layout.subdir):
        if all((candidate / f).is_file() for f in layout.files):
            return candidate
    have = path / layout.subdir if (path / layout.subdir).is_dir() else path
    missing = [f for f in layout.files if not (have / f).is_file()]
    raise _refuse(
        f"{path} is not a {layout.label} folder in the python pickle layout: expected the files "
        f"{', '.join(layout.files)} in it or in its {layout.subdir}/ sub-folder (missing in {have}: "
        f"{', '.join(missing)})"
    )


def _read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """One batch as (uint8 N x 3 x 32 x 32, int64 labels), refusing anything that is not a sound batch."""
    try:
        obj = safe_unpickle(path)
    except Exception as exc:  # truncated, corrupt, or refused content: all name the file
        raise _refuse(f"corrupt or truncated {layout.label} batch {path}: {type(exc).__name__}: {exc}") from None
    bad = f"corrupt {layout.label} batch {path}"
    if not isinstance(obj, dict) or b"data" not in obj or layout.label_key not in obj:
        keys = [k.decode("latin-1") if isinstance(k, bytes) else str(k) for k in obj] if isinstance(obj, dict) else []
        raise _refuse(f"{bad}: expected a dict with keys 'data' and {layout.label_key.decode()!r}, found {keys}")
    data = obj[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _refuse(f"{bad}: 'data' must be a uint8 array of shape (N, 3072), found {what}")
    try:
        labels = np.asarray(obj[layout.label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise _refuse(f"{bad}: labels are not integers") from None
    if len(labels) != len(data):
        raise _refuse(f"{bad}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise _refuse(f"{bad}: labels must lie in 0..{layout.num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_names(path: Path, layout: CifarLayout) -> tuple[str, ...]:
    try:
        meta = safe_unpickle(path)
    except Exception as exc:
        raise _refuse(f"corrupt or truncated {layout.label} meta file {path}: {type(exc).__name__}: {exc}") from None
    names = meta.get(layout.names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != layout.num_classes:
        raise _refuse(f"corrupt {layout.label} meta file {path}: expected {layout.num_classes} class names under "
                      f"{layout.names_key.decode()!r}")  # fmt: skip
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)


@dataclass
class RawImages:
    """Raw uint8 NCHW images before splitting; ``x_test`` only where the data has an official test set."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def read_cifar(kind: str, root: str) -> RawImages:
    """All training batches (concatenated) and the official test batch, without extra full copies."""
    layout = CIFAR_LAYOUTS[kind]
    folder = find_cifar_folder(kind, root)
    classes = _read_names(folder / layout.meta_file, layout)
    parts = [_read_batch(folder / f, layout) for f in layout.train_files]
    x = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    del parts
    x_test, y_test = _read_batch(folder / layout.test_file, layout)
    return RawImages(np.ascontiguousarray(x), y, classes, np.ascontiguousarray(x_test), y_test)


# -------------------------------------------------------------------------------------------- ImageFolder


def scan_image_folder(root: str) -> tuple[tuple[str, ...], list[Path], np.ndarray, tuple[int, ...]]:
    """Classes (sorted sub-folder names), image files, their labels, and the folders' mtimes (for caching).

    As torchvision's ImageFolder: one sub-folder per class, images found recursively by extension,
    hidden files and folders ignored.
    """
    path = existing_folder(root)
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise _refuse(f"{path} has no class sub-folders: an image folder needs one sub-folder of images per class")
    if len(class_dirs) == 1:
        raise _refuse(f"{path} has only one class folder ({class_dirs[0].name}): classification needs at least two")
    files: list[Path] = []
    labels: list[int] = []
    mtimes = [path.stat().st_mtime_ns]
    for label, cdir in enumerate(class_dirs):
        found = []
        for dirpath, dirnames, filenames in os.walk(cdir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            mtimes.append(os.stat(dirpath).st_mtime_ns)
            names = [f for f in sorted(filenames) if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS)]
            found.extend(Path(dirpath) / f for f in names)
        if not found:
            raise _refuse(f"class folder {cdir} has no images (looked for {', '.join(IMG_EXTENSIONS)})")
        files.extend(found)
        labels.extend([label] * len(found))
    return tuple(d.name for d in class_dirs), files, np.asarray(labels, dtype=np.int64), tuple(mtimes)


def check_image_headers(files: list[Path]) -> None:
    """Open each file's header with PIL (no pixel decoding), naming the first file that is not an image."""
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f) as img:
                w, h = img.size
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            raise _refuse(f"unreadable or corrupt image {f}: {exc}") from None
        if w < 1 or h < 1:
            raise _refuse(f"unreadable or corrupt image {f}: size {w}x{h}")


def read_images(files: list[Path], size: int) -> np.ndarray:
    """Decode, convert to RGB, and fit to ``size`` x ``size`` (shorter side resized, centre crop) as uint8 NCHW."""
    from PIL import Image, ImageOps

    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:
                rgb = img.convert("RGB")
                if rgb.size != (size, size):
                    rgb = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BILINEAR)
                out[i] = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise _refuse(f"unreadable or corrupt image {f}: {exc}") from None
    return out


def resize_uint8(x: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 NCHW images (e.g. CIFAR to 16x16 for a quick CPU run) with PIL's antialiased bilinear filter."""
    from PIL import Image

    if x.shape[2:] == (size, size):
        return x
    out = np.empty((len(x), x.shape[1], size, size), dtype=np.uint8)
    for i in range(len(x)):
        img = Image.fromarray(np.ascontiguousarray(x[i].transpose(1, 2, 0)))
        out[i] = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    return out


# ------------------------------------------------------------------------------------------------ checks

_CHECKED: dict[tuple[Any, ...], bool] = {}


def _file_key(folder: Path, names: tuple[str, ...]) -> tuple[Any, ...]:
    stats = [(folder / n).stat() for n in names]
    return (str(folder.resolve()), tuple((n, s.st_mtime_ns, s.st_size) for n, s in zip(names, stats, strict=True)))


def check_cifar(kind: str, root: str) -> None:
    """Layout check plus a full safe unpickle of every batch, cached by (path, file mtimes and sizes)."""
    layout = CIFAR_LAYOUTS[kind]
    folder = find_cifar_folder(kind, root)
    key = (kind, _file_key(folder, layout.files))
    if key in _CHECKED:
        return
    names = _read_names(folder / layout.meta_file, layout)
    counts = np.zeros(layout.num_classes, dtype=np.int64)
    for f in layout.train_files:
        counts += np.bincount(_read_batch(folder / f, layout)[1], minlength=layout.num_classes)
    _read_batch(folder / layout.test_file, layout)
    if counts.min() < 2:
        worst = int(counts.argmin())
        raise _refuse(
            f"{layout.label} training set in {folder} has {counts[worst]} image(s) of class {names[worst]!r}: "
            "each class needs at least 2 (one for training, one for validation)"
        )
    _CHECKED[key] = True


def check_image_folder(root: str) -> None:
    """Classes, files and every image header, cached by (path, folder mtimes)."""
    classes, files, labels, mtimes = scan_image_folder(root)
    key = ("imagefolder", str(Path(root).expanduser().resolve()), mtimes, len(files))
    if key in _CHECKED:
        return
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < 3:
        worst = int(counts.argmin())
        raise _refuse(
            f"class folder {Path(root).expanduser() / classes[worst]} has only {counts[worst]} image(s): each class "
            "needs at least 3 (one each for training, validation and test)"
        )
    check_image_headers(files)
    _CHECKED[key] = True
