"""MobileNetV2-style space: published MobileNetV2 size, genotype JSON and validation, mixed-kernel blocks, presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from nas_core.errors import ConfigError, GenotypeError
from nas_core.metrics import count_macs, count_params
from nas_core.spaces import SPACES, get_space
from nas_core.spaces.mobilenet_arch import (
    PRESETS,
    ZERO,
    MBConv,
    Mixed,
    MobileNetConfig,
    MobileNetGenotype,
    Stage,
    estimate_macs,
    layout,
    preset_for_shape,
)
from nas_core.spaces.mobilenet_blocks import InvertedResidual, block_macs

ROOT = Path(__file__).resolve().parents[1]
SP = get_space("mobilenet")
IMAGENET = (3, 224, 224)

# MobileNetV2 1.0, paper Table 2: (t, c, n, s).
MBV2_TABLE = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
MBV2_PARAMS = 3_504_872  # torchvision.models.mobilenet_v2() parameter count (the paper's "3.4M", torchvision's 3.5M)
MBV2_MACS = 300_775_272  # paper convention (conv + linear incl. bias); see _mbv2_macs_by_hand


def _mbv2_macs_by_hand() -> int:
    """MobileNetV2 1.0 MACs at 224x224 straight from the paper's table, without the space's code.

    At width 1.0 every channel count is already a multiple of 8, so no rounding is involved. This gives
    300,775,272 = 300.8 M, the paper's "300M" (Table 4) and the figure FLOP counters report for it.
    """
    macs = 112 * 112 * 32 * 3 * 3 * 3  # stem conv 3x3 stride 2, 3 -> 32
    c, hw = 32, 112
    for t, c_out, n, s in MBV2_TABLE:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden, out_hw = c * t, hw // stride
            expand = c * hidden * hw * hw if t != 1 else 0
            macs += expand + hidden * 9 * out_hw * out_hw + hidden * c_out * out_hw * out_hw
            c, hw = c_out, out_hw
    return macs + hw * hw * c * 1280 + 1280 * 1000 + 1000  # head conv 1x1, classifier with bias


def _genotype(preset: str, **changes: object) -> MobileNetGenotype:
    """The preset's table genotype with some blocks replaced: changes maps block name -> choice."""
    g = PRESETS[preset].table_genotype()
    names = PRESETS[preset].block_names()
    blocks = list(g.blocks)
    for name, choice in changes.items():
        blocks[names.index(name.replace("_", "."))] = choice
    return replace(g, blocks=tuple(blocks))


# ------------------------------------------------------------------------------------------ published size


def test_mobilenetv2_matches_published_size():
    net = SP.build_network("mobilenetv2", 1000, IMAGENET, 16, 5)
    assert count_params(net) == MBV2_PARAMS
    assert _mbv2_macs_by_hand() == MBV2_MACS
    assert count_macs(net, IMAGENET) == MBV2_MACS
    assert estimate_macs(SP.parse("mobilenetv2"), 1000, IMAGENET) == MBV2_MACS
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, *IMAGENET)).shape == (1, 1000)


@pytest.mark.parametrize(
    "width, params",
    # torchvision/timm mobilenet_v2 at these widths (timm: mobilenetv2_050 1.97M, mobilenetv2_140 6.11M)
    [(0.5, 1_968_680), (1.4, 6_108_776)],
)
def test_width_multiplier_rounds_like_mobilenetv2(width, params):
    g = replace(SP.parse("mobilenetv2"), width=width)
    net = SP.build_network(g, 1000, IMAGENET)
    assert count_params(net) == params
    assert net.layout.head_channels == (1280 if width < 1 else 1792)  # the last conv never narrows below 1280
    assert count_macs(net, IMAGENET) == estimate_macs(g, 1000, IMAGENET)


def test_cifar_preset_uses_cifar_strides():
    net = SP.build_network("mobilenetv2-cifar", 10, (3, 32, 32))
    # same weights as MobileNetV2 with a 10-way classifier: 3,504,872 - 1281 * 990
    assert count_params(net) == MBV2_PARAMS - 1281 * 990
    assert net.layout.stem_hw == (32, 32) and net.layout.blocks[-1].out_hw == (4, 4)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_macs(net, (3, 32, 32)) == estimate_macs(net.genotype, 10, (3, 32, 32))


@pytest.mark.parametrize("shape, preset", [((3, 224, 224), "imagenet"), ((3, 32, 32), "cifar"), ((1, 8, 8), "digits")])
def test_preset_from_input_shape(shape, preset):
    assert preset_for_shape(shape) == preset
    g = SP.parse('{"width": 1.0}')  # neither preset nor blocks: the table of the preset the shape selects
    assert g.preset is None and g.blocks is None
    if preset != "imagenet":
        net = SP.build_network(g, 10, shape)
        assert net.genotype.preset == preset
        assert net(torch.randn(2, *shape)).shape == (2, 10)


def test_block_names_of_every_preset_are_edges():
    for cfg in PRESETS.values():
        assert set(cfg.block_names()) <= set(SP.edges)
    assert len(PRESETS["imagenet"].block_names()) == 16 and len(PRESETS["digits"].block_names()) == 6


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError) as info:
        MobileNetConfig("x", (Stage(6, 24, 2, 3),), 32, 10).validated()
    assert info.value.field == "stages" and "stride" in str(info.value)
    with pytest.raises(ConfigError) as info:
        MobileNetConfig("x", (Stage(6, 24, 2, 2),), 32, 10, width=0).validated()
    assert info.value.field == "width"


# --------------------------------------------------------------------------------------- genotype JSON


MIXED_DIGITS = _genotype("digits", s2_b2=ZERO, s3_b1=Mixed(((3, 10), (7, 20))), s3_b2=MBConv(5, 3), s4_b1=MBConv(7, 1))


def test_json_round_trip():
    text = SP.format(MIXED_DIGITS)
    assert " " not in text and text.startswith("{")
    assert SP.parse(text) == MIXED_DIGITS
    doc = json.loads(json.dumps(SP.to_json(MIXED_DIGITS)))
    assert doc["blocks"][1] == "zero" and doc["blocks"][2] == {"3": 10, "7": 20} and doc["blocks"][3] == "mb5_e3"
    assert SP.from_json(doc) == MIXED_DIGITS
    assert SP.format(SP.parse(SP.format("mobilenetv2"))) == SP.format("mobilenetv2")
    # the export module writes a "network" key next to the genotype: tolerated
    assert SP.from_json({**doc, "network": {"num_classes": 10}}) == MIXED_DIGITS
    # blocks left out = the table's blocks
    assert SP.parse('{"preset": "digits"}') == SP.parse("mobilenetv2-digits")


def _doc(**changes):
    doc = SP.to_json(MIXED_DIGITS)
    doc.update(changes)
    return json.dumps(doc)


def _blocks(i, item):
    doc = SP.to_json(MIXED_DIGITS)
    doc["blocks"][i] = item
    return json.dumps(doc)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("resnet50", "unknown mobilenet genotype 'resnet50'"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "unknown mobilenet genotype"),
        (_doc(space="nb201"), "not mobilenet"),
        (_doc(format=2), "format 2"),
        (_doc(widht=1.0), "unknown key(s) 'widht'"),
        (_doc(preset="mnist"), "unknown mobilenet preset 'mnist'"),
        ('{"blocks": ["mb3_e6"]}', "'blocks' needs 'preset'"),
        (_doc(width=0), "width multiplier"),
        (_doc(width="wide"), "width multiplier"),
        (_doc(blocks="mb3_e6"), "'blocks' must be a list"),
        (_doc(blocks=["mb3_e6"] * 5), "preset 'digits' has 6 searchable blocks (s2.b1 .. s4.b2), the genotype gives 5"),
        (_blocks(0, "mb4_e6"), "block 1 (s2.b1): kernel size 4"),
        (_blocks(0, "mb3_e13"), "block 1 (s2.b1): expansion 13"),
        (_blocks(0, "conv3x3"), "block 1 (s2.b1): unknown choice 'conv3x3'"),
        (_blocks(0, 6), "block 1 (s2.b1): expected a string or an object"),
        (_blocks(2, {}), "block 3 (s3.b1): a mixed-kernel block needs at least one kernel"),
        (_blocks(2, {"9": 10}), "block 3 (s3.b1): kernel size '9'"),
        (_blocks(2, {"3": 0}), "block 3 (s3.b1): kernel 3 needs a positive integer channel count"),
        (_blocks(2, {"3": 2.5}), "block 3 (s3.b1): kernel 3 needs a positive integer"),
        (_blocks(0, "zero"), "block 1 (s2.b1): 'zero' is only allowed where the block keeps the shape"),
        (
            _blocks(4, "zero"),
            "block 5 (s4.b1): 'zero' is only allowed where the block keeps the shape (stride 1, same "
            "channels); this one has 24 -> 32 channels",
        ),  # fmt: skip
    ],
)
def test_validation_names_the_problem(text, fragment):
    with pytest.raises(GenotypeError) as info:
        SP.parse(text)
    assert fragment in str(info.value)


def test_cli_reports_bad_genotype_in_one_line():
    proc = _cli("profile", "--space", "mobilenet", "--genotype", _blocks(0, "zero"), "--input", "1x8x8")
    assert proc.returncode == 2
    assert "--genotype: block 1 (s2.b1): 'zero' is only allowed" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------- zero blocks


def test_zero_only_where_the_block_keeps_its_shape():
    plans = layout(PRESETS["imagenet"], 1.0, IMAGENET).searchable
    allowed = []
    for plan in plans:
        g = _genotype("imagenet", **{plan.name.replace(".", "_"): ZERO})
        try:
            SP.parse(SP.format(g))
        except GenotypeError:
            continue
        allowed.append(plan.name)
    # MobileNetV2: every block but the first of each stage, except the 64 -> 96 stage that keeps stride 1
    assert allowed == ["s2.b2", "s3.b2", "s3.b3", "s4.b2", "s4.b3", "s4.b4", "s5.b2", "s5.b3", "s6.b2", "s6.b3"]
    # width changes channels: at width 0.25 the 16- and 24-channel stages both round to 8 channels
    narrow = replace(_genotype("imagenet"), width=0.25)
    assert [p.name for p in layout(PRESETS["imagenet"], 0.25, IMAGENET).searchable if p.keeps_shape][:2] == [
        "s2.b2",
        "s3.b2",
    ]
    assert SP.parse(SP.format(narrow)) == narrow


def test_zero_block_is_identity_and_costs_nothing():
    base = SP.build_network("mobilenetv2-digits", 10, (1, 8, 8))
    g = _genotype("digits", s3_b2=ZERO)
    net = SP.build_network(g, 10, (1, 8, 8))
    idx = [p.name for p in net.layout.blocks].index("s3.b2")
    assert isinstance(net.blocks[idx], nn.Identity)
    removed = base.blocks[idx]
    assert count_params(base) - count_params(net) == count_params(removed)
    plan = base.layout.blocks[idx]
    saved = block_macs(plan.c_in, plan.c_out, 1, ((3, plan.c_in * 6),), True, plan.in_hw)
    assert count_macs(base, (1, 8, 8)) - count_macs(net, (1, 8, 8)) == saved
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


# -------------------------------------------------------------------------------------- mixed-kernel blocks


@pytest.mark.parametrize("stride, c_in, c_out", [(2, 16, 24), (1, 24, 24)])
def test_mixed_block_is_the_sum_of_its_branches(stride, c_in, c_out):
    torch.manual_seed(0)
    groups = ((3, 12), (5, 20), (7, 8))
    mixed = InvertedResidual(c_in, c_out, stride, groups).eval()
    branches = [InvertedResidual(c_in, c_out, stride, (g,)).eval() for g in groups]
    start = 0
    with torch.no_grad():
        for branch, (_k, h), dw in zip(branches, groups, mixed.dw):
            sl = slice(start, start + h)
            branch.conv_expand.weight.copy_(mixed.conv_expand.weight[sl])
            branch.dw[0].weight.copy_(dw.weight)
            branch.conv_project.weight.copy_(mixed.conv_project.weight[:, sl])
            start += h
        x = torch.randn(2, c_in, 9, 9)
        y = mixed(x)
        # BN at its initial eval statistics is a fixed positive scale without shift, so the sum commutes with it;
        # the residual (input) is counted once.
        total = sum(b(x) - (x if b.use_residual else 0) for b in branches) + (x if mixed.use_residual else 0)
    side = 5 if stride == 2 else 9
    assert y.shape == (2, c_out, side, side)
    torch.testing.assert_close(y, total, rtol=1e-5, atol=1e-5)
    macs = count_macs(mixed, (c_in, 9, 9))
    assert macs == sum(count_macs(b, (c_in, 9, 9)) for b in branches)
    assert macs == block_macs(c_in, c_out, stride, groups, True, (9, 9))


def test_network_with_mixed_blocks_counts_like_the_formula():
    g = MIXED_DIGITS
    for shape in ((1, 8, 8), (3, 8, 8)):
        net = SP.build_network(g, 10, shape)
        assert count_macs(net, shape) == estimate_macs(g, 10, shape)
        assert net(torch.randn(2, *shape)).shape == (2, 10)
    block = net.blocks[[p.name for p in net.layout.blocks].index("s3.b1")]
    assert block.kernels == (3, 7) and block.hidden == (10, 20)
    assert [m.kernel_size for m in block.dw] == [(3, 3), (7, 7)]
    assert net.current_genotype() == g


# --------------------------------------------------------------------------------------------- training


@pytest.fixture
def one_thread():
    """Training steps on the shared 2-core machine: one thread, as jobs use; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("channels", [1, 3])
def test_digits_network_trains_a_few_steps(channels, one_thread):
    torch.manual_seed(0)
    net = SP.build_network("mobilenetv2-digits", 10, (channels, 8, 8))
    y = torch.arange(32) % 10
    templates = torch.randn(10, channels, 8, 8)
    x = templates[y] + 0.3 * torch.randn(32, channels, 8, 8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    net.train()
    for _ in range(15):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[-1] < 0.4 * losses[0], losses


def test_export_round_trip(tmp_path):
    from nas_core.export import export_all, load_checkpoint

    net = SP.build_network(MIXED_DIGITS, 10, (1, 8, 8)).eval()
    paths = export_all(net, "mobilenet", SP.format(MIXED_DIGITS), {}, (1, 8, 8), tmp_path, 10, 16, 5)
    model, doc = load_checkpoint(paths["checkpoint"])
    assert SP.from_json(doc) == MIXED_DIGITS
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x))


# ------------------------------------------------------------------------------------------ CLI profile


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "nas_core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_profile_cli_gives_published_mobilenetv2():
    proc = _cli("profile", "--space", "mobilenet", "--genotype", "mobilenetv2", "--input", "3x224x224",
                "--classes", "1000", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["params"] == MBV2_PARAMS and out["macs"] == MBV2_MACS
    assert out["latency_ms"] > 0
    assert SP.parse(out["genotype"]) == SP.parse("mobilenetv2")


# ------------------------------------------------------------------------------------ drawing and alphas


def test_to_dot_draws_every_block():
    dot = SP.to_dot(MIXED_DIGITS)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    for name in PRESETS["digits"].block_names() + ("s1.b1",):
        assert f'"{name} ' in dot
    assert "zero (skipped)" in dot and "mixed k3×10 + k7×20" in dot and "MBConv k5 e3" in dot
    assert "residual" in dot and "fixed" in dot and "16→24, s2" in dot
    assert dot.count("->") == 1 + 7 + 2  # input->stem, one edge into each of 7 blocks, block->head->fc
    big = SP.to_dot("mobilenetv2")
    assert "input 3x224x224" in big and "1280" in big and big.count("MBConv k3 e6") == 16


def test_alpha_rows_name_the_blocks():
    w = torch.softmax(torch.randn(6, len(SP.ops)), dim=-1)
    rows = SP.alpha_rows({"blocks": w})
    assert len(rows) == 6 * len(SP.ops)
    assert rows[0][:3] == ("blocks", "s2.b1", "mb3_e3") and rows[-1][1:3] == ("s4.b2", "zero")
    assert {r[1] for r in SP.alpha_rows({"blocks": torch.zeros(16, 7)})} == set(PRESETS["imagenet"].block_names())
    with pytest.raises(ValueError, match="no mobilenet preset has 5"):
        SP.alpha_rows({"blocks": torch.zeros(5, 7)})
    assert "zero" in SP.param_free_ops and set(SP.param_free_ops) <= set(SP.ops)


# --------------------------------------------------------------------------------------------- supernet


def test_atomnas_supernet_and_no_strategy_lists_the_space():
    from nas_core.strategies import STRATEGIES

    net = SP.build_supernet(10, (1, 8, 8), 16, 5, style="atomnas")
    g = net.current_genotype()
    assert g.preset == "digits"
    assert all(isinstance(b, Mixed) and [k for k, _ in b.groups] == [3, 5, 7] for b in g.blocks)
    first = net.layout.searchable[0]
    assert g.blocks[0].groups[0][1] == 6 * first.c_in
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert count_macs(net, (1, 8, 8)) == estimate_macs(g, 10, (1, 8, 8))
    proxyless = SP.build_supernet(10, (1, 8, 8), 16, 5, style="proxylessnas")  # tests/test_proxyless.py
    assert proxyless.preset == "digits" and len(proxyless.mixed) == len(g.blocks)
    with pytest.raises(NotImplementedError, match="atomnas"):
        SP.build_supernet(10, (1, 8, 8), 16, 5)
    assert "mobilenet" in SPACES
    assert "proxylessnas" in {s.name for s in STRATEGIES.values() if "mobilenet" in s.spaces}
