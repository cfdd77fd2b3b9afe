"""Exports reload and reproduce the model's outputs; checkpoints load with weights_only=True."""

import json

import torch

from nas_core.export import build_from_document, export_all, load_checkpoint
from nas_core.spaces import get_space

ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"


def test_export_all_round_trips(tmp_path):
    torch.manual_seed(0)
    net = get_space("nb201").build_network(ARCH, 10, (1, 8, 8), 8, 1)
    net.train()
    net(torch.randn(16, 1, 8, 8))  # move BN running stats away from their init
    net.eval()
    paths = export_all(
        net, "nb201", ARCH, {"seed": 0}, (1, 8, 8), tmp_path, num_classes=10, channels=8, cells_per_stage=1
    )
    assert set(paths) == {"genotype_json", "checkpoint", "torchscript", "onnx"}
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        ref = net(x)
        model, doc = load_checkpoint(paths["checkpoint"])
        assert torch.allclose(model(x), ref, atol=1e-6)
        assert torch.allclose(torch.jit.load(paths["torchscript"])(x), ref, atol=1e-6)
    import onnxruntime

    session = onnxruntime.InferenceSession(paths["onnx"])  # any batch size: the batch axis is dynamic
    assert torch.allclose(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), ref, atol=1e-5)
    assert doc["arch"] == ARCH and doc["config"] == {"seed": 0}
    raw = torch.load(paths["checkpoint"], weights_only=True)
    assert "state_dict" in raw
    rebuilt = build_from_document(json.loads(open(paths["genotype_json"]).read()))
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in net.parameters())


class _Odd(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):  # noqa: ANN001, ANN201
        flat = x.flatten(1)
        return self.fc(flat) + torch.linalg.eigvalsh(flat.T @ flat)[:3]  # no ONNX op computes eigenvalues


def test_onnx_failure_is_a_readable_error_and_leaves_no_file(tmp_path):
    import pytest

    from nas_core.export_onnx import OnnxExportError, export_onnx

    with pytest.raises(OnnxExportError, match="ONNX export failed"):
        export_onnx(_Odd(), (1, 2, 2), tmp_path / "odd.onnx")
    assert not (tmp_path / "odd.onnx").exists()
