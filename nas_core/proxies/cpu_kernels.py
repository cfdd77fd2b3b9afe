"""Native CPU kernels for the TE-NAS NTK's convolutions, batch norms and pools, compiled on first use and cached.

``cpu_kernels.cpp`` is built with the machine's C++ compiler (``$CXX``, else ``g++`` or ``c++``) at
``-O3 -march=native`` into a cache folder (``$NAS_KERNEL_CACHE``, else ``~/.cache/nas-dashboard/kernels``),
keyed by the source, the compiler's version and the CPU's flags, so a cached build is only loaded on the
kind of CPU it was built for. The build takes about 2 s once per machine. Plain C ABI through ``ctypes``:
no PyTorch headers, no ninja.

Where there is no compiler, the build fails, or ``NAS_CPU_KERNELS=0``, :func:`library` returns None and
:mod:`nas_core.proxies.ntk_conv` uses PyTorch's convolutions (the same numbers up to float rounding, slower).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c++17")
#: plane widths the kernels are built for (anything else falls back to PyTorch)
WIDTHS = (4, 8, 16, 32, 64)

_lock = threading.Lock()
_state: dict[str, object] = {}


def enabled() -> bool:
    """False when ``NAS_CPU_KERNELS`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get("NAS_CPU_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    env = os.environ.get("NAS_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nas-dashboard" / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(cxx: str) -> Path:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), cxx, version, " ".join(FLAGS), platform.machine(), _cpu_flags()]).encode()
    ).hexdigest()[:16]
    out = cache_dir() / f"cpu_kernels-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # build under a temporary name, then rename: processes building at once each leave a whole file
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        res = subprocess.run([cxx, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"{cxx} failed: {res.stderr.strip()[-2000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    p, i, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.nk_lanes.argtypes, lib.nk_lanes.restype = [], i
    lib.nk_pad1.argtypes, lib.nk_pad1.restype = [p, p, i64, i, i], None
    for f in (lib.nk_conv3x3_forward, lib.nk_conv3x3_weight_grad):
        f.argtypes, f.restype = [p, p, p, i, i, i, i, i], i
    lib.nk_conv1x1.argtypes, lib.nk_conv1x1.restype = [p, p, p, i, i, i, i64, i], None
    lib.nk_conv1x1_weight_grad.argtypes, lib.nk_conv1x1_weight_grad.restype = [p, p, p, i, i, i, i64], None
    lib.nk_batch_norm_backward.argtypes = [p, p, p, p, p, p, p, p, i, i, i64]
    lib.nk_batch_norm_backward.restype = None
    lib.nk_box3x3.argtypes, lib.nk_box3x3.restype = [p, p, p, p, i64, i, i], None
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernels, building them on first call; None where they cannot be had (see module doc)."""
    if not enabled():
        return None
    if "lib" in _state:
        return _state["lib"]  # type: ignore[return-value]
    with _lock:
        if "lib" not in _state:
            lib = None
            cxx = _compiler()
            if cxx is None:
                log.info("no C++ compiler found: the NTK uses PyTorch's convolutions")
            else:
                try:
                    lib = _load(_build(cxx))
                except Exception as e:  # noqa: BLE001 - any failure means: use the PyTorch path
                    log.warning("native NTK kernels unavailable (%s): using PyTorch's convolutions", e)
            _state["lib"] = lib
    return _state["lib"]  # type: ignore[return-value]


def _lib() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError("the native kernels are not available (see nas_core.proxies.cpu_kernels)")
    return lib


def usable(x: torch.Tensor) -> bool:
    """Whether the kernels can take ``x`` (a CPU float32 NCHW tensor) and are built."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and library() is not None


def supports(x: torch.Tensor) -> bool:
    """Whether the conv kernels take this input: :func:`usable`, plane width in :data:`WIDTHS`."""
    return x.shape[-1] in WIDTHS and usable(x)


def pad1(x: torch.Tensor) -> torch.Tensor:
    """``F.pad(x, (1, 1, 1, 1))`` of a contiguous NCHW float32 tensor."""
    lib = _lib()
    x = x.contiguous()
    n, c, h, w = x.shape
    out = torch.empty(n, c, h + 2, w + 2, dtype=x.dtype)
    lib.nk_pad1(x.data_ptr(), out.data_ptr(), n * c, h, w)
    return out


def conv3x3(xp: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """3x3 conv, stride 1, of an input already padded by 1 (:func:`pad1`); ``w``: out x in x 3 x 3."""
    lib = _lib()
    xp, w = xp.contiguous(), w.contiguous()
    n, ci, hp, wp = xp.shape
    co = w.shape[0]
    y = torch.empty(n, co, hp - 2, wp - 2, dtype=xp.dtype)
    if lib.nk_conv3x3_forward(xp.data_ptr(), w.data_ptr(), y.data_ptr(), n, ci, co, hp - 2, wp - 2):
        raise ValueError(f"no kernel for width {wp - 2}")
    return y


def conv3x3_weight_grad(xp: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Weight gradient of :func:`conv3x3` for output gradient ``g`` (``xp`` the padded input)."""
    lib = _lib()
    xp, g = xp.contiguous(), g.contiguous()
    n, ci, hp, wp = xp.shape
    co = g.shape[1]
    gw = torch.empty(co, ci, 3, 3, dtype=g.dtype)
    if lib.nk_conv3x3_weight_grad(xp.data_ptr(), g.data_ptr(), gw.data_ptr(), n, ci, co, hp - 2, wp - 2):
        raise ValueError(f"no kernel for width {wp - 2}")
    return gw


def conv1x1(x: torch.Tensor, w: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """1x1 conv of NCHW ``x`` by ``w`` (out x in, any trailing 1x1 dims); ``transpose``: by ``w``'s transpose."""
    lib = _lib()
    x, w = x.contiguous(), w.contiguous()
    n, ci, h, wd = x.shape
    co = w.shape[1] if transpose else w.shape[0]
    y = torch.empty(n, co, h, wd, dtype=x.dtype)
    lib.nk_conv1x1(x.data_ptr(), w.data_ptr(), y.data_ptr(), n, ci, co, h * wd, int(transpose))
    return y


def conv1x1_weight_grad(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Weight gradient (out x in) of a 1x1 conv of ``x`` for output gradient ``g``."""
    lib = _lib()
    x, g = x.contiguous(), g.contiguous()
    n, ci, h, wd = x.shape
    co = g.shape[1]
    gw = torch.empty(co, ci, dtype=g.dtype)
    lib.nk_conv1x1_weight_grad(x.data_ptr(), g.data_ptr(), gw.data_ptr(), n, ci, co, h * wd)
    return gw


def batch_norm_backward(
    g: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    gamma: torch.Tensor | None,
    mask: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(dx, dgamma, dbeta) of a batch norm on batch statistics (``mean``, ``invstd`` of ``x`` per channel);
    ``mask`` says which to compute (the others are None)."""
    lib = _lib()
    g, x = g.contiguous(), x.contiguous()
    n, c = x.shape[:2]
    dx = torch.empty_like(x) if mask[0] else None
    dgamma = torch.empty(c, dtype=x.dtype) if mask[1] else None
    dbeta = torch.empty(c, dtype=x.dtype) if mask[2] else None
    gm = gamma.detach().contiguous() if gamma is not None else None

    def ptr(t: torch.Tensor | None) -> int | None:
        return t.data_ptr() if t is not None else None

    lib.nk_batch_norm_backward(
        g.data_ptr(), x.data_ptr(), mean.contiguous().data_ptr(), invstd.contiguous().data_ptr(), ptr(gm), ptr(dx),
        ptr(dgamma), ptr(dbeta), n, c, x[0, 0].numel(),
    )  # fmt: skip
    return dx, dgamma, dbeta


def box3x3(x: torch.Tensor, pre: torch.Tensor | None = None, post: torch.Tensor | None = None) -> torch.Tensor:
    """``post * (3x3 box sum of the zero-padded pre * x)`` per plane; ``pre``/``post``: H x W maps or None."""
    lib = _lib()
    x = x.contiguous()
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    ptrs = [m.contiguous().view(h, w).data_ptr() if m is not None else None for m in (pre, post)]
    lib.nk_box3x3(x.data_ptr(), *ptrs, out.data_ptr(), x.numel() // (h * w), h, w)
    return out
