"""Which device a run trains on: the config's ``device`` setting, checked and resolved.

``auto`` takes the first CUDA GPU when torch sees one and the CPU otherwise; ``cpu``, ``cuda``, ``cuda:N``
and ``mps`` name one. The spelling is checked when a config is validated (also where it is queued, which
may be a machine without the GPU its worker has); whether the device exists is checked when the run starts,
on the worker's machine, and a missing one fails the run with a message naming ``device``.

What runs there: the data set (moved once, whole: the in-memory sets here fit a GPU), every search's and
final training's forward and backward passes, the TE-NAS proxies. What stays on the CPU whatever the device:
MACs and params counting, exports, and the latency every result is timed with (batch 1, one CPU thread), so
results trained on different machines stay comparable on one Pareto chart.
"""

from __future__ import annotations

import re

import torch

from nas_core.errors import ConfigError

#: the spellings ``device`` takes; ``cuda:N`` picks the N-th visible GPU
_SPEC = re.compile(r"^(auto|cpu|mps|cuda(?::(\d+))?)$")


def parse_device(spec: object) -> str:
    """The setting normalised (lower case, trimmed), or ConfigError("device") naming the accepted spellings."""
    text = str(spec if spec is not None else "").strip().lower()
    if not _SPEC.match(text):
        raise ConfigError("device", f"must be auto, cpu, cuda, cuda:N or mps (got {spec!r})")
    return text


def _cuda_missing() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU build without CUDA"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA GPU on this machine"


def resolve_device(spec: object) -> torch.device:
    """The torch device the setting names on this machine; ConfigError("device") when it is not here."""
    text = parse_device(spec)
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device", "mps (Apple GPU) is not available on this machine; use auto or cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise ConfigError("device", f"{text} asked for, but {_cuda_missing()}; use auto or cpu")
    index = int(text.split(":")[1]) if ":" in text else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError("device", f"{text} asked for, but this machine has {count} CUDA GPU(s) (cuda:0 to "
                                    f"cuda:{count - 1})")  # fmt: skip
    return torch.device("cuda", index)


def local_devices() -> list[str]:
    """The device settings that work on this machine, for the Launch page: auto and cpu always, then each GPU."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        out += ["cuda"] + ([f"cuda:{i}" for i in range(n)] if n > 1 else [])
    if torch.backends.mps.is_available():
        out.append("mps")
    return out


def describe_local() -> str:
    """What this machine offers, in words: the GPUs torch sees, or why there are none."""
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"{len(names)} CUDA GPU(s): " + ", ".join(f"cuda:{i} {n}" for i, n in enumerate(names))
    if torch.backends.mps.is_available():
        return "an Apple GPU (mps)"
    return f"no GPU: {_cuda_missing()}"


def device_text(device: torch.device | str) -> str:
    """A device for the log: ``cuda:0 (NVIDIA H100 80GB HBM3)``, ``mps``, ``cpu``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return dev.type
