"""NAS-Bench-201 space: genotype format, validation, and the benchmark's parameter/MAC counts."""

import json

import pytest
import torch

from nas_core.errors import GenotypeError
from nas_core.metrics import count_macs, count_params
from nas_core.spaces import get_space

SP = get_space("nb201")
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_C3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
RESNET_LIKE = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"


def test_round_trip_text_and_json():
    g = SP.parse(RESNET_LIKE)
    assert SP.format(g) == RESNET_LIKE
    doc = json.loads(json.dumps(SP.to_json(g)))
    assert SP.from_json(doc) == g
    assert SP.parse(json.dumps(doc)) == g
    assert doc["edges"]["3<-0"] == "skip_connect"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|", "3 nodes"),
        ("|conv_7x7~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_7x7'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must come from node 0"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2: expected 2"),
        ("|none~0|+|none~0|none1|+|none~0|none~1|none~2|", "lacks '~source'"),
        ('{"space": "darts", "arch": "x"}', "not nb201"),
        ("{not json", "not valid JSON"),
    ],
)
def test_validation_names_the_problem(text, fragment):
    with pytest.raises(GenotypeError, match=None) as info:
        SP.parse(text)
    assert fragment in str(info.value)


def test_json_edges_must_agree_with_arch():
    doc = SP.to_json(SP.parse(RESNET_LIKE))
    doc["edges"]["1<-0"] = "none"
    with pytest.raises(GenotypeError, match="disagrees"):
        SP.from_json(doc)


@pytest.mark.parametrize(
    "arch, params, macs",
    [(ALL_NONE, 73_306, 7_783_050), (ALL_C3, 1_531_546, 220_119_690)],
)
def test_benchmark_counts_cifar10(arch, params, macs):
    net = SP.build_network(arch, num_classes=10, input_shape=(3, 32, 32), channels=16, cells_per_stage=5)
    assert count_params(net) == params
    assert count_macs(net, (3, 32, 32)) == macs


def test_per_edge_increments():
    base = SP.build_network(ALL_NONE)
    one_c3 = SP.build_network("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    one_c1 = SP.build_network("|none~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|none~2|")
    assert count_params(one_c3) - count_params(base) == 243_040
    assert count_macs(one_c3, (3, 32, 32)) - count_macs(base, (3, 32, 32)) == 35_389_440
    assert count_params(one_c1) - count_params(base) == 28_000
    assert count_macs(one_c1, (3, 32, 32)) - count_macs(base, (3, 32, 32)) == 3_932_160


def test_to_dot_lists_non_none_edges():
    dot = SP.to_dot(RESNET_LIKE)
    assert dot.startswith("digraph")
    assert dot.count("->") == 3
    assert "nor_conv_3x3" in dot and "skip_connect" in dot


def test_fused_supernet_equals_plain_formulation():
    torch.manual_seed(0)
    net = SP.build_supernet(10, (3, 16, 16), 8, 2)
    with torch.no_grad():
        net.alpha.normal_()
    x = torch.randn(6, 3, 16, 16)
    out_f = net(x)
    out_f.square().sum().backward()
    grads_f = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    for cell in net.cells:
        if hasattr(cell, "fused"):
            cell.fused = False
    out_p = net(x)
    out_p.square().sum().backward()
    assert torch.allclose(out_f, out_p, atol=1e-5, rtol=1e-4)
    for n, p in net.named_parameters():
        assert torch.allclose(grads_f[n], p.grad, atol=1e-4, rtol=1e-3), n


def test_channels_last_gives_same_outputs():
    torch.manual_seed(1)
    net = SP.build_supernet(10, (3, 16, 16), 8, 1)
    x = torch.randn(4, 3, 16, 16)
    ref = net(x)
    net_cl = net.to(memory_format=torch.channels_last)
    out = net_cl(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-5, rtol=1e-4)


def test_supernet_genotype_is_argmax_including_none():
    net = SP.build_supernet(10, (1, 8, 8), 4, 1)
    with torch.no_grad():
        net.alpha.zero_()
        net.alpha[:, 0] = 1.0  # none everywhere
        net.alpha[0, 3] = 2.0  # nor_conv_3x3 on 1<-0
    assert SP.format(net.genotype()) == "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (2, 16, 5, 7), (3, 1, 1, 1)])
def test_fast_exclude_pad_pool_equals_pytorch(shape, channels_last):
    """Both paths of the pool (shifted adds; padding-inclusive kernel rescaled) against PyTorch's own."""
    from nas_core.spaces.nb201_arch import avg_pool_3x3_exclude_pad

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    ya = avg_pool_3x3_exclude_pad(a)
    yb = torch.nn.functional.avg_pool2d(b, 3, 1, 1, count_include_pad=False)
    assert ya.shape == yb.shape and torch.allclose(ya, yb, atol=1e-6)
    g = torch.randn_like(yb)
    ya.backward(g)
    yb.backward(g)
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
