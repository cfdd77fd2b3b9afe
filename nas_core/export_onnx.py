"""ONNX export, verified with ONNX Runtime before the file is offered.

The TorchScript-based exporter is used: on this CPU it takes about 2 s for an NB201 network where the
``torch.export`` (dynamo) path took about 17 s for the same graph and gave the same outputs. The batch axis
is dynamic, so the file serves batch 1 latency tests and batch inference alike; the check runs the
exported graph on two batch sizes and compares with the PyTorch model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 17
TOLERANCE = 1e-4


class OnnxExportError(RuntimeError):
    """The network could not be exported, or the exported graph disagrees with the model."""


def export_onnx(model: nn.Module, input_shape: tuple[int, int, int], path: str | Path) -> Path:
    """Write ``model`` (eval mode, float32 input ``(batch, *input_shape)``) as ONNX and check it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model = model.eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, *input_shape, generator=gen)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's concern
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        verify_onnx(model, path, input_shape)
    except OnnxExportError:
        path.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported as one readable error
        path.unlink(missing_ok=True)
        raise OnnxExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    return path


def verify_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int]) -> float:
    """Run the file with ONNX Runtime on batches of 1 and 3 and compare with ``model``; returns the max difference."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch in (1, 3):
        x = torch.randn(batch, *input_shape, generator=gen)
        with torch.no_grad():
            want = model(x)
        got = session.run(None, {name: x.numpy()})[0]
        if got.shape != tuple(want.shape):
            raise OnnxExportError(f"ONNX output shape {got.shape} differs from the model's {tuple(want.shape)}")
        diff = float(np.abs(got - want.numpy()).max())
        scale = max(1.0, float(want.abs().max()))
        if not diff <= TOLERANCE * scale:
            raise OnnxExportError(f"ONNX outputs differ from the model's by {diff:.3g} at batch {batch}")
        worst = max(worst, diff)
    return worst
