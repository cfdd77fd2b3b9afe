"""Export a trained architecture: genotype JSON, PyTorch checkpoint, TorchScript.

Every file is reloaded and its outputs compared with the live model before it is offered, so a
download that rebuilds wrongly is caught here, not by the user. Checkpoints hold only tensors and
plain data, so they load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_core.export_onnx import OnnxExportError, export_onnx
from nas_core.spaces import get_space

CHECKPOINT_FORMAT = 1


class ExportError(RuntimeError):
    """An export did not reproduce the model's outputs after reloading."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def network_spec(num_classes: int, input_shape: tuple[int, int, int], channels: int, cells_per_stage: int) -> dict:
    return {
        "num_classes": int(num_classes),
        "input_shape": [int(v) for v in input_shape],
        "channels": int(channels),
        "cells_per_stage": int(cells_per_stage),
    }


def genotype_document(space_name: str, genotype: str, network: dict[str, Any]) -> dict[str, Any]:
    """The JSON that rebuilds the architecture: the space's genotype document plus the network's size."""
    sp = get_space(space_name)
    doc = sp.to_json(genotype)
    doc["network"] = network
    return doc


#: network options beyond the four sizes, saved in ``network`` by spaces whose networks have them
#: (the DARTS network's ``build_options``: number of cells, auxiliary head)
NETWORK_OPTIONS: dict[str, type] = {"layers": int, "auxiliary": bool}


def build_from_document(doc: dict[str, Any]) -> nn.Module:
    """Rebuild an untrained network from a genotype JSON document written by :func:`genotype_document`."""
    sp = get_space(doc.get("space", ""))
    g = sp.from_json(doc)
    net = doc.get("network") or {}
    options = {k: cast(net[k]) for k, cast in NETWORK_OPTIONS.items() if net.get(k) is not None}
    return sp.build_network(
        g,
        int(net.get("num_classes", 10)),
        tuple(net.get("input_shape", (3, 32, 32))),
        int(net.get("channels", 16)),
        int(net.get("cells_per_stage", 5)),
        **options,
    )


def save_checkpoint(model: nn.Module, doc: dict[str, Any], path: str | Path, config: dict | None = None) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "genotype": json.dumps(doc, sort_keys=True),
            "config": json.dumps(config or {}, sort_keys=True, default=str),
            "state_dict": state,
        },
        path,
    )


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained network from a checkpoint (weights_only: no pickled code is executed)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "genotype" not in ckpt:
        raise ExportError(f"{path}: not a NAS Dashboard checkpoint")
    doc = json.loads(ckpt["genotype"])
    model = build_from_document(doc)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    doc["config"] = json.loads(ckpt.get("config") or "{}")
    return model, doc


def _check_close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        diff = (a - b).abs().max().item() if a.shape == b.shape else float("nan")
        raise ExportError(f"{what}: reloaded outputs differ from the model (max abs diff {diff:.3g})")


def export_all(
    model: nn.Module,
    space_name: str,
    genotype: str,
    config: dict[str, Any] | None,
    input_shape: tuple[int, int, int],
    out_dir: str | Path,
    num_classes: int | None = None,
    channels: int | None = None,
    cells_per_stage: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Write genotype JSON, checkpoint, TorchScript and ONNX under ``out_dir``; return kind -> path.

    Each file is reloaded and its outputs compared before it is listed. An ONNX failure (an op the
    exporter does not support) leaves ONNX out and says why through ``log``; the others must succeed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    if num_classes is None:
        num_classes = next(m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)).out_features
    if channels is None or cells_per_stage is None:
        raise ValueError("channels and cells_per_stage are needed to rebuild the network")
    spec = network_spec(num_classes, input_shape, channels, cells_per_stage)
    spec.update(getattr(model, "build_options", {}))  # e.g. DARTS layers / auxiliary
    doc = genotype_document(space_name, genotype, spec)
    x = torch.randn(4, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)

    paths: dict[str, str] = {}
    gpath = out / "genotype.json"
    gpath.write_text(json.dumps(doc, indent=2, sort_keys=True))
    rebuilt = build_from_document(json.loads(gpath.read_text()))
    if sum(p.numel() for p in rebuilt.parameters()) != sum(p.numel() for p in model.parameters()):
        raise ExportError("genotype JSON rebuilds a network of a different size")
    paths["genotype_json"] = str(gpath)

    cpath = out / "model.pt"
    save_checkpoint(model, doc, cpath, config)
    reloaded, _ = load_checkpoint(cpath)
    with torch.no_grad():
        _check_close(ref, reloaded(x), "checkpoint")
    paths["checkpoint"] = str(cpath)

    tpath = out / "model.torchscript.pt"
    with torch.no_grad():
        traced = torch.jit.trace(model, x[:1], check_trace=False)
    traced.save(str(tpath))
    loaded = torch.jit.load(str(tpath), map_location="cpu")
    with torch.no_grad():
        _check_close(ref, loaded(x), "TorchScript")
    paths["torchscript"] = str(tpath)

    try:
        paths["onnx"] = str(export_onnx(model, input_shape, out / "model.onnx"))
    except OnnxExportError as exc:
        if log is not None:
            log(f"no ONNX file: {exc}")
    return paths
