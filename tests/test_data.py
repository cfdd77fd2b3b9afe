"""Data sets from disk: tiny CIFAR-10/100 pickles and ImageFolder trees built on the fly, splits, errors, pages."""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from nas_core import data_readers
from nas_core.config import GENERAL_FIELDS, ExperimentConfig
from nas_core.data import DATASETS, FOLDER_KINDS, check_dataset, load_dataset
from nas_core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
C10_TRAIN, C10_TEST = 6, 2  # images per class in the tiny CIFAR-10 fixture
C100_TRAIN, C100_TEST = 3, 1


# ------------------------------------------------------------------------------------------------ fixtures


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes str/bytes as Python 2 ``str`` and numpy under ``numpy.core``, as the official CIFAR files are."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2str(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        head = bytes([len(data)]) if len(data) < 256 else struct.pack("<i", len(data))
        self.write((pickle.SHORT_BINSTRING if len(data) < 256 else pickle.BINSTRING) + head + data)
        self.memoize(obj)

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = "numpy" if obj in (np.ndarray, np.dtype) else obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_py2str
    dispatch[str] = save_py2str
    dispatch[type] = save_global


def _dump(obj: Any, path: Path, style: str) -> None:
    with open(path, "wb") as fh:
        if style == "py2":
            Py2Pickler(fh, protocol=2).dump(obj)
        else:
            pickle.dump(obj, fh, protocol=int(style) if style.isdigit() else pickle.DEFAULT_PROTOCOL)


def _images(n: int, labels: np.ndarray, seed: int) -> np.ndarray:
    """Random uint8 images whose red plane is brighter for higher labels (something a net can learn)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 200, size=(n, 3, 32, 32), dtype=np.uint8)
    x[:, 0] = np.minimum(x[:, 0].astype(np.int64) // 4 + labels[:, None, None] * 20, 255).astype(np.uint8)
    return x


def make_cifar10(parent: Path, style: str = "default") -> tuple[Path, dict[str, np.ndarray]]:
    """A CIFAR-10 python-layout folder (5 train batches, test batch, meta) with C10_TRAIN/C10_TEST images a class."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    y = np.repeat(np.arange(10), C10_TRAIN)
    np.random.default_rng(0).shuffle(y)
    x = _images(len(y), y, 1)
    for i, part in enumerate(np.array_split(np.arange(len(y)), 5)):
        batch = {b"batch_label": f"training batch {i + 1} of 5".encode(), b"labels": [int(v) for v in y[part]],
                 b"data": x[part].reshape(len(part), 3072), b"filenames": [b"i%d.png" % j for j in part]}  # fmt: skip
        _dump(batch, folder / f"data_batch_{i + 1}", style)
    yt = np.repeat(np.arange(10), C10_TEST)
    xt = _images(len(yt), yt, 2)
    _dump({b"batch_label": b"testing batch 1 of 1", b"labels": yt.tolist(), b"data": xt.reshape(len(yt), 3072),
           b"filenames": [b"t_%d.png" % j for j in range(len(yt))]}, folder / "test_batch", style)  # fmt: skip
    names = [n.encode() for n in ("airplane automobile bird cat deer dog frog horse ship truck").split()]
    _dump({b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072}, folder / "batches.meta", style)
    return folder, {"x": x, "y": y, "x_test": xt, "y_test": yt}


def make_cifar100(parent: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A CIFAR-100 python-layout folder (train, test, meta) whose coarse labels differ from the fine ones."""
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name, per_class, seed in (("train", C100_TRAIN, 3), ("test", C100_TEST, 4)):
        y = np.repeat(np.arange(100), per_class)
        x = _images(len(y), y % 10, seed)
        out[f"x_{name}"], out[f"y_{name}"] = x, y
        _dump({b"filenames": [b"f%d.png" % i for i in range(len(y))], b"batch_label": name.encode(),
               b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist(), b"data": x.reshape(len(y), 3072)},
              folder / name, "default")  # fmt: skip
    _dump({b"fine_label_names": [b"class_%03d" % i for i in range(100)],
           b"coarse_label_names": [b"super_%02d" % i for i in range(20)]}, folder / "meta", "default")  # fmt: skip
    return folder, out


def make_imagefolder(root: Path, per_class: int = 6, classes: tuple[str, ...] = ("dog", "cat", "frog")) -> Path:
    """One sub-folder per class of PNG and JPEG files of mixed sizes and modes (RGB, L, RGBA)."""
    rng = np.random.default_rng(5)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = (40, 30) if i % 2 else (24, 36)
            arr = rng.integers(0, 120, size=(h, w, 3), dtype=np.uint8)
            arr[..., c % 3] += 100  # a class colour
            img = Image.fromarray(arr)
            if i % 3 == 1:
                img = img.convert("L")
            elif i % 3 == 2:
                img = img.convert("RGBA")
            if i % 2:  # JPEG has no alpha channel
                (img.convert("RGB") if img.mode == "RGBA" else img).save(root / name / f"{i}.jpg", quality=95)
            else:
                img.save(root / name / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    data_readers._CHECKED.clear()


def _raise(spec: str, **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        if kw:
            load_dataset(spec, **kw)
        else:
            check_dataset(spec)
    assert info.value.field == "dataset"
    return info.value


def _class_counts(y: torch.Tensor, n: int) -> list[int]:
    return torch.bincount(y, minlength=n).tolist()


# ---------------------------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("style", ["default", "2", "5", "py2"])
@pytest.mark.parametrize("which", ["extracted", "parent"])
def test_cifar10_loads_official_test_set_and_carves_validation(tmp_path: Path, style: str, which: str) -> None:
    folder, raw = make_cifar10(tmp_path, style)
    spec = f"cifar10:{folder if which == 'extracted' else tmp_path}"
    check_dataset(spec)
    d = load_dataset(spec, seed=0, val_fraction=0.5, test_fraction=0.3)
    assert d.name == "cifar10" and d.num_classes == 10 and d.augment
    assert d.classes[:3] == ("airplane", "automobile", "bird") and len(d.classes) == 10
    assert d.input_shape == (3, 32, 32) and d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert len(d.y_train) == len(d.y_val) == 10 * C10_TRAIN // 2  # val_fraction of the training set
    assert _class_counts(d.y_val, 10) == [C10_TRAIN // 2] * 10
    assert torch.equal(d.y_test, torch.from_numpy(raw["y_test"]))  # official test set, in order; test_fraction unused
    # pixels survive the NCHW layout (R, G, B planes of 1024 each) and the normalisation, exactly
    mean, std = torch.tensor(d.mean).view(1, 3, 1, 1), torch.tensor(d.std).view(1, 3, 1, 1)
    back = ((d.x_test * std + mean) * 255).round().to(torch.uint8)
    assert torch.equal(back, torch.from_numpy(raw["x_test"]))


def test_cifar_normalisation_uses_training_split_statistics_only(tmp_path: Path) -> None:
    folder, raw = make_cifar10(tmp_path)
    d = load_dataset(f"cifar10:{folder}", seed=1, val_fraction=0.5)
    mean, std = torch.tensor(d.mean).view(1, 3, 1, 1), torch.tensor(d.std).view(1, 3, 1, 1)
    assert torch.allclose(d.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(d.x_train.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    # find the training images among the raw ones and recompute the statistics from them
    train_u8 = ((d.x_train * std + mean) * 255).round().to(torch.uint8).numpy()
    index = {img.tobytes(): i for i, img in enumerate(raw["x"])}
    picked = raw["x"][[index[img.tobytes()] for img in train_u8]] / 255.0
    assert np.allclose(d.mean, picked.mean(axis=(0, 2, 3)), atol=1e-6)
    assert np.allclose(d.std, picked.std(axis=(0, 2, 3)), atol=1e-6)
    assert not np.allclose(d.mean, (raw["x"] / 255.0).mean(axis=(0, 2, 3)), atol=1e-6)  # validation left out


def test_cifar_splits_are_stratified_and_seeded(tmp_path: Path) -> None:
    folder, _ = make_cifar10(tmp_path)
    a, b = (load_dataset(f"cifar10:{folder}", seed=7, val_fraction=0.34) for _ in range(2))
    c = load_dataset(f"cifar10:{folder}", seed=8, val_fraction=0.34)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.x_val, c.x_val)
    for split in (a.y_train, a.y_val, a.y_test, c.y_train, c.y_val):
        assert min(_class_counts(split, 10)) >= 1
    assert _class_counts(a.y_val, 10) == [2] * 10  # round(6 * 0.34) of every class


def test_cifar100_uses_fine_labels_and_meta_names(tmp_path: Path) -> None:
    folder, raw = make_cifar100(tmp_path)
    d = load_dataset(f"cifar100:{tmp_path}", val_fraction=0.34)
    assert d.num_classes == 100 and d.classes[7] == "class_007" and d.augment
    assert _class_counts(d.y_val, 100) == [1] * 100 and _class_counts(d.y_train, 100) == [2] * 100
    assert torch.equal(d.y_test, torch.from_numpy(raw["y_test"]))
    check_dataset(f"cifar100:{folder}")


def test_image_size_resizes_cifar_and_builtin_sets(tmp_path: Path) -> None:
    folder, _ = make_cifar10(tmp_path)
    d = load_dataset(f"cifar10:{folder}", image_size=16)
    assert d.input_shape == (3, 16, 16) and d.x_test.shape == (10 * C10_TEST, 3, 16, 16)
    assert torch.allclose(d.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert load_dataset("digits", image_size=32).input_shape == (1, 32, 32)
    with pytest.raises(ConfigError) as info:
        load_dataset("digits", image_size=2)
    assert info.value.field == "image_size"


def test_max_train_per_class_takes_a_seeded_stratified_subset(tmp_path: Path) -> None:
    folder, raw = make_cifar10(tmp_path)
    spec = f"cifar10:{folder}"
    d = load_dataset(spec, seed=3, val_fraction=0.25, max_train_per_class=4)
    assert _class_counts(d.y_train, 10) == [3] * 10 and _class_counts(d.y_val, 10) == [1] * 10
    assert len(d.y_test) == len(raw["y_test"])  # the test set stays whole
    assert torch.equal(d.x_train, load_dataset(spec, seed=3, val_fraction=0.25, max_train_per_class=4).x_train)
    assert len(load_dataset(spec, max_train_per_class=1000).y_train) == len(load_dataset(spec).y_train)
    with pytest.raises(ConfigError) as info:
        load_dataset(spec, max_train_per_class=1)
    assert info.value.field == "max_train_per_class"
    digits = load_dataset("digits", max_train_per_class=20)
    assert _class_counts(digits.y_train, 10) == [15] * 10 and _class_counts(digits.y_val, 10) == [5] * 10
    assert len(digits.y_test) == len(load_dataset("digits").y_test)


def test_unpickling_refuses_anything_but_arrays(tmp_path: Path) -> None:
    folder, _ = make_cifar10(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    with open(folder / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    err = _raise(f"cifar10:{folder}")
    assert "data_batch_2" in err.message and "refused to load" in err.message
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="refused to load"):
        data_readers.SafeUnpickler(io.BytesIO(pickle.dumps(Path("x")))).load()


# ---------------------------------------------------------------------------------------------- ImageFolder


def test_imagefolder_reads_sorted_classes_resized(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "pets", per_class=10)
    check_dataset(f"imagefolder:{root}")
    d = load_dataset(f"imagefolder:{root}", seed=0)
    assert d.classes == ("cat", "dog", "frog") and d.num_classes == 3 and d.augment
    assert d.input_shape == (3, 32, 32)  # default size for image folders
    assert [_class_counts(s, 3) for s in (d.y_train, d.y_val, d.y_test)] == [[6] * 3, [2] * 3, [2] * 3]
    assert torch.allclose(d.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    # the class colour survives loading: dog (label 1) was made bright in red, cat (label 0) in green
    raw = d.x_train * torch.tensor(d.std).view(1, 3, 1, 1) + torch.tensor(d.mean).view(1, 3, 1, 1)
    red_minus_green = (raw[:, 0] - raw[:, 1]).mean(dim=(1, 2))
    assert red_minus_green[d.y_train == 1].mean() > 0.1 and red_minus_green[d.y_train == 0].mean() < -0.1
    small = load_dataset(f"imagefolder:{root}", seed=0, image_size=12)
    assert small.input_shape == (3, 12, 12)
    again = load_dataset(f"imagefolder:{root}", seed=0, image_size=12)
    assert torch.equal(small.x_val, again.x_val) and torch.equal(small.y_test, again.y_test)
    capped = load_dataset(f"imagefolder:{root}", seed=0, max_train_per_class=4, val_fraction=0.2, test_fraction=0.2)
    assert _class_counts(capped.y_train, 3) == [3] * 3 and _class_counts(capped.y_val, 3) == [1] * 3
    assert len(capped.y_test) == len(d.y_test)


# ---------------------------------------------------------------------------------------------------- errors


def test_error_missing_not_a_folder_and_empty(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for kind in FOLDER_KINDS:
        err = _raise(f"{kind}:{missing}")
        assert str(missing) in err.message and "does not exist" in err.message
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "is not a folder" in _raise(f"imagefolder:{a_file}").message
    assert str(a_file) in _raise(f"cifar10:{a_file}").message
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _raise(f"cifar100:{empty}")
    assert str(empty) in err.message and "is empty" in err.message
    assert str(missing) in _raise(f"cifar10:{missing}", seed=0).message  # load_dataset refuses the same way


def test_error_unknown_kind_lists_the_known_ones() -> None:
    err = _raise("imagenet:/data")
    assert "imagenet" in err.message and all(k in err.message for k in DATASETS)


@pytest.mark.parametrize("kind", list(FOLDER_KINDS))
def test_error_kind_without_folder(kind: str) -> None:
    assert _raise(kind).message == f"{kind} needs a folder: {kind}:{FOLDER_KINDS[kind]}"
    assert _raise(f"{kind}:  ").message.startswith(f"{kind} needs a folder")
    if kind == "cifar10":
        assert _raise("cifar10").message == "cifar10 needs a folder: cifar10:/path/to/cifar-10-batches-py"


def test_error_builtin_kind_with_folder(tmp_path: Path) -> None:
    err = _raise(f"digits:{tmp_path}")
    assert "reads no folder" in err.message and str(tmp_path) in err.message


def test_error_wrong_cifar_layout_names_expected_files(tmp_path: Path) -> None:
    folder, _ = make_cifar10(tmp_path)
    (folder / "test_batch").unlink()
    err = _raise(f"cifar10:{tmp_path}")
    assert str(tmp_path) in err.message and "data_batch_1" in err.message and "batches.meta" in err.message
    assert "missing in" in err.message and err.message.rstrip(")").endswith("test_batch")
    other = tmp_path / "other"
    (other / "stuff").mkdir(parents=True)
    err = _raise(f"cifar100:{other}")
    assert "train, test, meta" in err.message and "cifar-100-python/" in err.message
    folder100, _ = make_cifar100(tmp_path / "c100")
    assert "CIFAR-10 folder" in _raise(f"cifar10:{folder100}").message  # the wrong variant


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad_shape", "bad_labels", "not_a_dict"])
def test_error_corrupt_cifar_batch_names_the_file(tmp_path: Path, damage: str) -> None:
    folder, _ = make_cifar10(tmp_path)
    batch = folder / "data_batch_3"
    blob = batch.read_bytes()
    if damage == "truncated":
        batch.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        batch.write_bytes(b"\x00not a pickle at all" * 10)
    else:
        obj = {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}
        if damage == "bad_labels":
            obj = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 42]}
        _dump([1, 2] if damage == "not_a_dict" else obj, batch, "default")
    err = _raise(f"cifar10:{folder}")
    assert str(batch) in err.message and "corrupt" in err.message
    assert str(batch) in _raise(f"cifar10:{folder}", seed=0).message


def test_error_imagefolder_structure(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    assert "no class sub-folders" in _raise(f"imagefolder:{flat}").message
    one = make_imagefolder(tmp_path / "one", classes=("only",))
    err = _raise(f"imagefolder:{one}")
    assert "only one class folder (only)" in err.message and str(one) in err.message
    noimg = make_imagefolder(tmp_path / "noimg")
    (noimg / "zebra").mkdir()
    (noimg / "zebra" / "readme.txt").write_text("no pictures here")
    err = _raise(f"imagefolder:{noimg}")
    assert f"class folder {noimg / 'zebra'} has no images" in err.message
    few = make_imagefolder(tmp_path / "few", per_class=2)
    assert "has only 2 image(s)" in _raise(f"imagefolder:{few}").message


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_error_corrupt_image_names_the_file(tmp_path: Path, damage: str) -> None:
    root = make_imagefolder(tmp_path / "imgs")
    bad = root / "frog" / "3.jpg"
    if damage == "garbage":
        bad.write_bytes(b"this is not a jpeg")
        err = _raise(f"imagefolder:{root}")  # the header check finds it
        assert str(bad) in err.message and "unreadable or corrupt image" in err.message
    else:
        blob = bad.read_bytes()
        bad.write_bytes(blob[: len(blob) // 2])  # header intact, pixels cut off: found when decoding
        check_dataset(f"imagefolder:{root}")  # the cheap header check cannot see it
    err = _raise(f"imagefolder:{root}", seed=0, test_fraction=0.05, val_fraction=0.05)
    assert str(bad) in err.message and "unreadable or corrupt image" in err.message


def test_check_is_cached_by_modification_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = make_cifar10(tmp_path)
    calls = []
    real = data_readers._read_batch
    monkeypatch.setattr(data_readers, "_read_batch", lambda p, lay: calls.append(p) or real(p, lay))
    check_dataset(f"cifar10:{folder}")
    assert len(calls) == 6
    check_dataset(f"cifar10:{folder}")
    assert len(calls) == 6  # cached
    batch = folder / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:100])
    assert str(batch) in _raise(f"cifar10:{folder}").message  # a changed file is checked again


# ------------------------------------------------------------------------------------------ config and pages


def test_config_fields_and_refusal_of_a_bad_folder(tmp_path: Path) -> None:
    names = [p.name for p in GENERAL_FIELDS]
    assert "image_size" in names and "max_train_per_class" in names
    help_text = next(p.help for p in GENERAL_FIELDS if p.name == "val_fraction")
    assert "architecture" in help_text and "weights" in help_text
    cfg = ExperimentConfig(image_size="16", max_train_per_class="5").validated()  # type: ignore[arg-type]
    assert cfg.image_size == 16 and cfg.max_train_per_class == 5
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(max_train_per_class=-1).validated()
    assert info.value.field == "max_train_per_class"
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(dataset=f"cifar10:{missing}").validated()
    assert info.value.field == "dataset" and str(missing) in info.value.message


def test_launch_page_refuses_a_missing_cifar_folder_and_queues_nothing(db: str, tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    from storage import repo

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception
    missing = tmp_path / "no_cifar_here"
    at.selectbox(key="dataset").set_value("cifar10")
    at.text_input(key="data_folder").set_value(str(missing))
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception
    messages = [e.value for e in at.error]
    assert len(messages) == 1 and messages[0].startswith("**dataset**")
    assert str(missing) in messages[0] and "Nothing was queued" in messages[0]
    assert not at.success and len(repo.list_experiments()) == 0


def test_search_end_to_end_on_an_image_folder(tmp_path: Path) -> None:
    from nas_core.pipeline import run_experiment
    from nas_core.reporting import MemoryReporter

    root = make_imagefolder(tmp_path / "imgs", per_class=8)
    cfg = ExperimentConfig(strategy="darts", space="nb201", dataset=f"imagefolder:{root}", epochs=1, final_epochs=1,
                           batch_size=8, channels=4, final_channels=4, cells_per_stage=1, image_size=16)  # fmt: skip
    rep = MemoryReporter(workdir=tmp_path / "run")
    res = run_experiment(cfg, rep)
    assert res.status == "succeeded" and res.accuracy is not None and 0.0 <= res.accuracy <= 1.0
    assert any("imagefolder: 12 train / 6 val / 6 test, 3x16x16, 3 classes" in m for _, _, m in rep.logs)
    assert rep.architectures and rep.architectures[0].macs > 0


def test_config_stores_the_data_folder_as_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker started from another folder must find the data the page was given as a relative path."""
    make_imagefolder(tmp_path / "pics")
    monkeypatch.chdir(tmp_path)
    cfg = ExperimentConfig(dataset="imagefolder:pics").validated()
    assert cfg.dataset == f"imagefolder:{tmp_path / 'pics'}"
    assert cfg.validated().dataset == cfg.dataset  # idempotent
    assert ExperimentConfig(dataset="digits").validated().dataset == "digits"
