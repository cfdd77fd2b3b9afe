"""ProxylessNAS: binarised paths, the gate gradient (full_v2 and two-path), the updates, the latency table, runs."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_worker import procs  # noqa: F401  (fixture for the worker test)
from torch import nn

from nas_core import latency_lut
from nas_core.config import ExperimentConfig
from nas_core.data import load_dataset
from nas_core.errors import ConfigError
from nas_core.latency_lut import (
    UNSTEADY_DRIFT_PCT,
    LatencyLUT,
    build_lut,
    drift_pct,
    latency_table,
    load_or_build_lut,
    lut_frame,
    lut_key,
    lut_path,
    macs_table,
    measure_in_network,
    predict_latency,
    predict_macs,
)
from nas_core.metrics import (
    LATENCY_SECONDS,
    LATENCY_STATISTIC,
    count_macs,
    fast_median,
    latency_seconds,
    measure_latency,
    profile_network,
    steady_allocator,
)
from nas_core.pipeline import run_experiment
from nas_core.reporting import MemoryReporter
from nas_core.spaces import get_space, mobilenet_arch
from nas_core.spaces.mobilenet_arch import OPS, PRESETS, estimate_macs
from nas_core.spaces.mobilenet_proxyless import (
    BINARY_MODES,
    CANDIDATES,
    MixedBlock,
    ProxylessSupernet,
    alpha_grad_from_gates,
    recentre_pair,
)
from nas_core.strategies import STRATEGIES, SearchContext
from nas_core.strategies.proxyless import arch_step, resource_loss
from nas_core.train import train_genotype
from storage import repo

SP = get_space("mobilenet")
DIGITS = (1, 8, 8)
FAST_LUT = {"warmup": 1, "repeats": 3, "min_seconds": 0.0}
PARAMS = {
    "loss_type": "mul#log",
    "resource": "latency",
    "reg_alpha": 0.2,
    "reg_beta": 0.3,
    "reg_lambda": 0.1,
    "binary_mode": "full_v2",
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits_lut() -> latency_lut.LatencyLUT:
    return build_lut("digits", 1.0, DIGITS, 10, **FAST_LUT)


def _supernet(seed: int = 0) -> ProxylessSupernet:
    torch.manual_seed(seed)
    return SP.build_supernet(10, DIGITS, style="proxylessnas")  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ the supernet


def test_supernet_blocks_ops_and_init():
    net = _supernet()
    plans = net.layout.searchable
    assert net.preset == "digits" and net.block_names == PRESETS["digits"].block_names()
    for b, plan in zip(net.mixed, plans):
        assert b.ops[:6] == CANDIDATES and (("zero" in b.ops) == plan.keeps_shape)
        assert b.alpha.abs().max() < 1e-2  # N(0, 1e-3)
    assert [b.ops[-1] == "zero" for b in net.mixed] == [False, True] * 3  # zero for non-first blocks of a stage
    w = net.arch_weights()["blocks"]
    assert w.shape == (6, len(OPS)) and torch.allclose(w.sum(1), torch.ones(6))
    assert (w[0, OPS.index("zero")] == 0) and w[1, OPS.index("zero")] > 0
    assert {id(p) for p in net.arch_parameters()}.isdisjoint({id(p) for p in net.weight_parameters()})
    assert len(SP.alpha_rows(net.arch_weights(), net.block_names)) == 6 * len(OPS)


def test_only_the_sampled_path_runs_and_gets_gradients():
    net = _supernet()
    calls: dict[tuple[str, str], int] = {}
    for b in net.mixed:
        for op, mod in b.candidates.items():
            mod.register_forward_hook(lambda m, i, o, key=(b.name, op): calls.__setitem__(key, calls.get(key, 0) + 1))
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    for seed in range(5):
        calls.clear()
        chosen = net.sample_single(torch.Generator().manual_seed(seed))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(torch.randn(4, *DIGITS)), torch.arange(4)).backward()
        expected = {(b.name, b.ops[i]): 1 for b, i in zip(net.mixed, chosen) if b.ops[i] != "zero"}
        assert calls == expected  # one candidate per block, none where zero was drawn
        for b, i in zip(net.mixed, chosen):
            for op, mod in b.candidates.items():
                has_grad = [p.grad is not None for p in mod.parameters()]
                assert all(has_grad) if op == b.ops[i] else not any(has_grad), (b.name, op)
        assert all(a.grad is None for a in net.arch_parameters())
        opt.step()


def test_sampling_follows_softmax_alpha():
    net = _supernet()
    with torch.no_grad():
        net.mixed[0].alpha.copy_(torch.tensor([3.0, 0, 0, 0, 0, 0]))
    gen = torch.Generator().manual_seed(0)
    draws = [net.sample_single(gen)[0] for _ in range(2000)]
    p0 = math.exp(3) / (math.exp(3) + 5)
    assert abs(draws.count(0) / 2000 - p0) < 0.04


# -------------------------------------------------------------------------------- gradients and updates


def test_gate_gradient_formula_matches_autograd_through_softmax_weighted_sum():
    torch.manual_seed(0)
    alpha = torch.randn(5, dtype=torch.float64, requires_grad=True)
    outs = torch.randn(5, 3, 4, 4, dtype=torch.float64)  # o_k of five candidate ops
    target = torch.randn(3, 4, 4, dtype=torch.float64)

    def loss_of(mixed: torch.Tensor) -> torch.Tensor:
        return ((mixed.tanh() - target) ** 2).sum()

    p = torch.softmax(alpha, 0)
    (auto,) = torch.autograd.grad(loss_of((p[:, None, None, None] * outs).sum(0)), alpha)
    mixed = (p.detach()[:, None, None, None] * outs).sum(0).requires_grad_(True)
    (d_out,) = torch.autograd.grad(loss_of(mixed), mixed)
    gate_grads = (outs * d_out).flatten(1).sum(1)  # dL/dg_k = sum(o_k * dL/dout)
    torch.testing.assert_close(alpha_grad_from_gates(gate_grads, p.detach()), auto)
    # and the double sum written out as in the reference
    loop = torch.zeros(5, dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            loop[i] += gate_grads[j] * p[j] * (float(i == j) - p[i])
    torch.testing.assert_close(loop.detach(), auto)


def test_two_mode_gate_gradient_is_sum_of_output_times_output_gradient():
    net = _supernet().double()
    net.train()
    x, y = torch.randn(4, *DIGITS, dtype=torch.float64), torch.arange(4)
    gen = torch.Generator().manual_seed(3)
    for _ in range(10):  # until the last block draws two non-zero ops
        net.sample_two(gen)
        b = net.mixed[-1]
        if not b.is_zero(b.active) and not b.is_zero(b.inactive):
            break
    assert not b.is_zero(b.active) and not b.is_zero(b.inactive)
    feats: dict[str, torch.Tensor] = {}
    b.register_forward_pre_hook(lambda m, inp: feats.__setitem__("x", inp[0].detach()))

    def keep_output(m, inp, out) -> None:
        out.retain_grad()
        feats["out"] = out

    b.register_forward_hook(keep_output)
    for m in net.modules():  # the same BN statistics in both forward passes below
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    F.cross_entropy(net(x), y).backward()
    with torch.no_grad():
        o_active, o_other = b.run_op(b.active, feats["x"]), b.run_op(b.inactive, feats["x"])
    d_out = feats["out"].grad
    torch.testing.assert_close(b.gates.grad[b.active], (o_active * d_out).sum())
    torch.testing.assert_close(b.gates.grad[b.inactive], (o_other * d_out).sum())
    others = [k for k in range(len(b.ops)) if k not in (b.active, b.inactive)]
    assert torch.all(b.gates.grad[others] == 0)


def _gated_sum(block: MixedBlock, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """out = sum_k g_k * o_k (+ shortcut), every path computed with a graph: what full_v2 differentiates."""
    out = sum(g[k] * block.run_op(k, x) for k in range(len(block.ops)) if not block.is_zero(k))
    return out + x if block.residual else out


def test_full_v2_gate_gradient_equals_autograd_of_the_gated_sum():
    """One-hot gate on path s, only s runs forward; the backward's dL/dg_k for every k equals autograd's
    gradient of L(sum_k g_k o_k) at g = one-hot(s), dL/dx too, and the alpha gradient is the softmax Jacobian."""
    torch.manual_seed(0)
    block = MixedBlock("t", 4, 4, 1, True, "relu6").double().train()
    assert block.ops[-1] == "zero"
    with torch.no_grad():
        block.alpha.normal_()
    calls: dict[str, int] = {}
    for op, mod in block.candidates.items():
        mod.register_forward_hook(lambda m, i, o, op=op: calls.__setitem__(op, calls.get(op, 0) + 1))
    inp = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, 5, 5, dtype=torch.float64)

    def loss_of(out: torch.Tensor) -> torch.Tensor:
        return (out.tanh() * w).sum() + (out**2).mean()

    for s in range(len(CANDIDATES)):
        onehot = torch.zeros(len(block.ops), dtype=torch.float64)
        onehot[s] = 1.0
        # full_v2: only path s in the forward, every candidate in the backward
        block.mode, block.active, block.gates = "full_v2", s, onehot.clone().requires_grad_(True)
        calls.clear()
        x = inp * 1.0  # a non-leaf input, as inside the network
        out = block(x)
        assert calls == {block.ops[s]: 1}
        loss = loss_of(out)
        d_x, d_g = torch.autograd.grad(loss, [inp, block.gates])
        assert calls == {op: 1 for op in CANDIDATES}  # the others ran once, in the backward
        # reference: all paths with a graph, gates a leaf at one-hot(s)
        g_ref = onehot.clone().requires_grad_(True)
        ref_loss = loss_of(_gated_sum(block, inp * 1.0, g_ref))
        d_x_ref, d_g_ref = torch.autograd.grad(ref_loss, [inp, g_ref])
        torch.testing.assert_close(loss, ref_loss)
        torch.testing.assert_close(d_g, d_g_ref)
        torch.testing.assert_close(d_x, d_x_ref)
        assert d_g[-1] == 0 and torch.all(d_g[:-1] != 0)  # zero op: output 0; every MBConv: its own gradient
        # the alpha gradient: straight-through g = one-hot + p - sg(p) makes autograd apply dp/dalpha
        alpha = block.alpha.detach().clone().requires_grad_(True)
        p = torch.softmax(alpha, 0)
        pd = p.detach()
        st_loss = loss_of(_gated_sum(block, inp.detach(), onehot + p - p.detach()))
        (d_alpha_ref,) = torch.autograd.grad(st_loss, alpha)
        d_alpha = alpha_grad_from_gates(d_g, pd)
        torch.testing.assert_close(d_alpha, d_alpha_ref)
        loop = torch.tensor(
            [sum(float(d_g[j] * pd[j] * (float(i == j) - pd[i])) for j in range(len(pd))) for i in range(len(pd))],
            dtype=torch.float64,
        )
        torch.testing.assert_close(d_alpha, loop)


def test_full_v2_gate_gives_no_input_gradient_when_the_input_needs_none():
    block = MixedBlock("t", 4, 8, 2, False, "relu6").double()
    assert "zero" not in block.ops
    block.mode, block.active = "full_v2", 2
    block.gates = torch.nn.functional.one_hot(torch.tensor(2), len(block.ops)).double().requires_grad_(True)
    out = block(torch.randn(2, 4, 6, 6, dtype=torch.float64))
    assert out.shape == (2, 8, 3, 3) and out.requires_grad
    (d_g,) = torch.autograd.grad(out.square().sum(), block.gates)
    assert torch.all(d_g != 0)


def _reference_full_v2_grads(
    net: ProxylessSupernet, x: torch.Tensor, y: torch.Tensor, table, ref: float, params: dict
) -> list[torch.Tensor | None]:
    """The alpha gradient the reference's full_v2 step applies, from an all-paths forward with a graph:
    d(loss)/d(alpha) through the resource term + the softmax Jacobian of d(loss)/d(g); None for skipped blocks."""
    gates = []
    h = net.stem(x)
    for block in net.blocks:
        if isinstance(block, MixedBlock):
            g = torch.zeros(len(block.ops), dtype=x.dtype)
            g[block.active] = 1.0
            g.requires_grad_(True)
            gates.append(g)
            h = h if block.is_zero(block.active) else _gated_sum(block, h, g)
        else:
            h = block(h)
    logits = net.classifier(net.pool(net.head(h)).flatten(1))
    expected = table.expected(net.probs_matrix())
    loss = resource_loss(
        F.cross_entropy(logits, y), expected, ref, params["loss_type"], params["resource"],
        params["reg_alpha"], params["reg_beta"], params["reg_lambda"],
    )  # fmt: skip
    alphas = net.arch_parameters()
    grads = torch.autograd.grad(loss, alphas + gates, allow_unused=True)
    out: list[torch.Tensor | None] = []
    for b, a, da, dg in zip(net.mixed, alphas, grads[: len(alphas)], grads[len(alphas) :]):
        if b.is_zero(b.active):
            out.append(None)
            continue
        out.append(da + alpha_grad_from_gates(dg, torch.softmax(a.detach(), 0)))
    return out


@pytest.mark.parametrize("resource", ["macs", "latency"])
def test_full_v2_arch_step_applies_the_reference_gradient_to_every_alpha(resource, digits_lut):
    net = _supernet(5).double().train()
    table = latency_table(digits_lut) if resource == "latency" else macs_table("digits", 1.0, DIGITS, 10)
    params = PARAMS | {"resource": resource, "binary_mode": "full_v2"}
    x, y = torch.randn(8, *DIGITS, dtype=torch.float64), torch.arange(8) % 10
    ref = 0.7 * float(table.expected(net.probs_matrix().detach()))
    opt = torch.optim.SGD(net.arch_parameters(), lr=1.0)  # new alpha = old - grad
    skipped = moved = 0
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        state = gen.get_state()
        chosen = net.sample_full_v2(gen)
        want = _reference_full_v2_grads(net, x, y, table, ref, params)
        before = [a.detach().clone() for a in net.arch_parameters()]
        gen.set_state(state)  # arch_step draws the same paths
        arch_step(net, opt, x, y, table, ref, params, gen)
        for b, i, old, g in zip(net.mixed, chosen, before, want):
            new = b.alpha.detach()
            if g is None:  # zero was drawn: the block was skipped, its alphas stay
                assert b.ops[i] == "zero" and torch.equal(new, old)
                skipped += 1
                continue
            torch.testing.assert_close(new, old - g)
            assert torch.all(new != old)  # every op of the block moves, not only a pair
            moved += 1
        assert all(b.mode == "single" and b.gates is None for b in net.mixed)
    assert moved > 0 and skipped > 0


def test_recentre_keeps_the_pair_log_sum_exp():
    a = torch.tensor([0.3, -0.2, 1.0, 0.5])
    old = a[[0, 2]].tolist()
    a[0] += 0.7
    a[2] -= 0.1
    recentre_pair(a, [0, 2], old)
    assert torch.logsumexp(a[[0, 2]], 0).item() == pytest.approx(math.log(math.exp(0.3) + math.exp(1.0)), abs=1e-6)
    assert a[0] - a[2] == pytest.approx(0.3 + 0.7 - 0.9, abs=1e-6)
    assert a[1].item() == pytest.approx(-0.2) and a[3].item() == pytest.approx(0.5)


@pytest.mark.parametrize("resource", ["latency", "macs"])
def test_two_path_update_changes_only_the_two_sampled_alphas(resource, digits_lut):
    net = _supernet(1)
    net.train()
    table = latency_table(digits_lut) if resource == "latency" else macs_table("digits", 1.0, DIGITS, 10)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.05, betas=(0.0, 0.999))
    x, y = torch.randn(16, *DIGITS), torch.arange(16) % 10
    ref = 0.5 * float(table.expected(net.probs_matrix().detach()))
    moved = 0
    for seed in range(6):
        before = [a.detach().clone() for a in net.arch_parameters()]
        gen = torch.Generator().manual_seed(seed)
        state = gen.get_state()
        pairs = net.sample_two(gen)
        gen.set_state(state)  # arch_step draws the same pairs again
        out = arch_step(net, a_opt, x, y, table, ref, PARAMS | {"resource": resource, "binary_mode": "two"}, gen)
        assert math.isfinite(out["total"]) and out["ce"] > 0
        for b, (act, other), old in zip(net.mixed, pairs, before):
            new = b.alpha.detach()
            untouched = [k for k in range(len(b.ops)) if k not in (act, other)]
            assert torch.equal(new[untouched], old[untouched])
            if b.is_zero(act):  # the reference leaves a skipped block's alphas alone
                assert torch.equal(new, old)
                continue
            pair = [act, other]
            assert torch.logsumexp(new[pair], 0).item() == pytest.approx(torch.logsumexp(old[pair], 0).item(), abs=1e-5)
            moved += int(not torch.equal(new[pair], old[pair]))
        assert all(b.mode == "single" and b.gates is None for b in net.mixed)
    assert moved > 0


@pytest.mark.parametrize("mode", BINARY_MODES)
def test_resource_term_pushes_towards_cheaper_ops(mode, digits_lut):
    """A strong latency term (lambda 50) outweighs CE on random data: the expected latency falls."""
    net = _supernet(2)
    table = latency_table(digits_lut)
    p_before = net.probs_matrix().detach()
    e_before = float(table.expected(p_before))
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=0.05, betas=(0.0, 0.999))
    x, y = torch.randn(16, *DIGITS), torch.arange(16) % 10
    params = PARAMS | {"loss_type": "add#linear", "reg_lambda": 50.0, "binary_mode": mode}
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        arch_step(net, a_opt, x, y, table, e_before * 0.5, params, gen)
    assert float(table.expected(net.probs_matrix().detach())) < e_before


def test_resource_loss_forms():
    ce = torch.tensor(2.0)
    assert float(resource_loss(ce, torch.tensor(3.0), 3.0, "mul#log", "latency")) == pytest.approx(0.2 * 2.0)
    assert float(resource_loss(ce, torch.tensor(3.0), 3.0, "add#linear", "latency")) == pytest.approx(2.0)
    assert float(resource_loss(ce, torch.tensor(6.0), 3.0, "add#linear", "latency")) == pytest.approx(2.1)
    # scaled so the target maps to the reference's 80 ms: E = 2*ref weighs as 160 ms vs 80 ms there
    want = 0.2 * 2.0 * (math.log(160) / math.log(80)) ** 0.3
    assert float(resource_loss(ce, torch.tensor(1.0), 0.5, "mul#log", "latency")) == pytest.approx(want)
    big = resource_loss(ce, torch.tensor(6e8), 3e8, "mul#log", "macs")
    assert float(big) == pytest.approx(0.2 * 2.0 * (math.log(6e8) / math.log(3e8)) ** 0.3)
    with pytest.raises(ValueError, match="unknown loss type"):
        resource_loss(ce, torch.tensor(1.0), 1.0, "exp", "latency")


# ----------------------------------------------------------------------------------- the lookup table


def test_expected_latency_is_the_probability_weighted_sum_over_paths(digits_lut):
    lut, table = digits_lut, latency_table(digits_lut)
    net = _supernet(4)
    # one-hot p: the expectation is the stand-alone genotype's prediction
    for seed in range(5):
        chosen = net.sample_single(torch.Generator().manual_seed(seed))
        onehot = torch.zeros(6, len(OPS), dtype=torch.float64)
        ops = [b.ops[i] for b, i in zip(net.mixed, chosen)]
        for r, op in enumerate(ops):
            onehot[r, OPS.index(op)] = 1.0
        genotype = SP.parse(json.dumps({"preset": "digits", "blocks": ops}))
        assert float(table.expected(onehot)) == pytest.approx(predict_latency(lut, genotype), rel=1e-12)
        hand = sum(lut.fixed.values()) + sum(lut.blocks[b][op] for b, op in zip(lut.blocks, ops))
        assert predict_latency(lut, genotype) == pytest.approx(hand, rel=1e-12)
        assert predict_macs(lut, genotype) == estimate_macs(genotype, 10, DIGITS)
        assert predict_macs(lut, genotype) == count_macs(SP.build_network(genotype, 10, DIGITS), DIGITS)
    # general p: fixed + sum over blocks and allowed ops of p * LUT
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()
    p = net.probs_matrix().detach()
    hand = lut.fixed_ms
    for b in net.mixed:
        for k, op in enumerate(b.ops):
            hand += float(b.probs().detach()[k]) * lut.blocks[b.name][op]
    assert float(table.expected(p)) == pytest.approx(hand, rel=1e-9)
    assert lut.blocks["s2.b2"]["zero"] == 0.0 and "zero" not in lut.blocks["s2.b1"]
    assert all(v > 0 for v in lut.fixed.values()) and set(lut.fixed) == {"stem", "s1.b1", "head", "classifier"}
    # MACs work the same way
    mt = macs_table("digits", 1.0, DIGITS, 10)
    g = net.genotype()
    assert mt.predict(net.chosen_ops()) == estimate_macs(g, 10, DIGITS)


@pytest.mark.parametrize("method", ["network", "isolated"])
def test_lut_is_built_once_then_read_from_the_file(method, tmp_path, monkeypatch):
    measured: list[str] = []
    real_iso, real_net = latency_lut.measure_latency, latency_lut.measure_in_network

    def counting_iso(*a, **kw):
        measured.append("module")
        return real_iso(*a, **kw)

    def counting_net(*a, **kw):
        measured.append("networks")
        return real_net(*a, **kw)

    monkeypatch.setattr(latency_lut, "measure_latency", counting_iso)
    monkeypatch.setattr(latency_lut, "measure_in_network", counting_net)
    logs: list[str] = []
    kw = dict(FAST_LUT, method=method, log=logs.append, attempts=1)
    first = load_or_build_lut(tmp_path, "digits", 1.0, DIGITS, 10, **kw)
    assert first.path is not None and first.path.parent == tmp_path and first.path.is_file()
    assert not first.reused and "measured" in logs[-1] and str(first.path) in logs[-1] and first.method == method
    if method == "network":
        assert measured == ["networks"]  # one pass over the six candidate networks measures every entry
    else:  # one measurement per entry at most (identical module + input once); 4 fixed layers
        n_entries = sum(len([o for o in ops if o != "zero"]) for ops in first.blocks.values()) + 4
        assert 0 < len(measured) <= n_entries and set(measured) == {"module"}
    assert all(v > 0 for ops in first.blocks.values() for o, v in ops.items() if o != "zero")
    count = len(measured)

    def refuse(*a, **kw):
        raise AssertionError("the stored table must be reused, not measured again")

    monkeypatch.setattr(latency_lut, "measure_latency", refuse)
    monkeypatch.setattr(latency_lut, "measure_in_network", refuse)
    second = load_or_build_lut(tmp_path, "digits", 1.0, DIGITS, 10, **kw)
    assert second.reused and second.path == first.path and "reused" in logs[-1]
    assert second.blocks == first.blocks and second.fixed == first.fixed and list(second.blocks) == list(first.blocks)
    assert len(measured) == count
    # another key (here the class count) is another table
    monkeypatch.setattr(latency_lut, "measure_latency", counting_iso)
    monkeypatch.setattr(latency_lut, "measure_in_network", counting_net)
    third = load_or_build_lut(tmp_path, "digits", 1.0, DIGITS, 5, **kw)
    assert third.path != first.path and len(measured) > count
    doc = json.loads(first.path.read_text())
    assert doc["key"]["threads"] == 1 and doc["key"]["device"] and doc["key"]["input_shape"] == [1, 8, 8]
    assert doc["key"]["method"] == method
    assert doc["key"]["allocator"] == steady_allocator() == first.allocator
    assert doc["key"]["statistic"] == LATENCY_STATISTIC == first.statistic == "fast10-median"
    if method == "network":  # rounds in two halves: how far the machine's speed moved between them
        assert doc["drift_pct"] == first.drift_pct >= 0
        assert second.drift_pct == first.drift_pct
        assert "between the two halves of the measurement" in logs[0]
    else:
        assert first.drift_pct is None and first.steadiness() == ""


def test_steadiness_flags_a_table_measured_while_the_machine_moved(digits_lut):
    steady = dataclasses.replace(digits_lut, drift_pct=2.0)
    assert steady.steadiness() == "the machine's speed moved 2.0% between the two halves of the measurement"
    assert not steady.unsteady
    shaky = dataclasses.replace(digits_lut, drift_pct=30.0, path=Path("/x/t.json"))
    assert shaky.unsteady
    assert "too unsteady for predictions within 10%" in shaky.steadiness() and "delete /x/t.json" in shaky.steadiness()


def test_an_unsteady_fresh_table_is_measured_again_and_the_steadiest_kept(tmp_path, monkeypatch, digits_lut):
    drifts = iter([30.0, 12.0, 40.0, 30.0, 2.0])
    calls: list[float] = []

    def fake_build(*a, **kw) -> LatencyLUT:
        calls.append(next(drifts))
        return dataclasses.replace(digits_lut, drift_pct=calls[-1], path=None)

    monkeypatch.setattr(latency_lut, "build_lut", fake_build)
    logs: list[str] = []
    lut = load_or_build_lut(tmp_path / "a", "digits", 1.0, DIGITS, 10, log=logs.append)
    assert calls == [30.0, 12.0, 40.0] and lut.drift_pct == 12.0 and lut.unsteady  # three tries, steadiest kept
    assert json.loads(lut.path.read_text())["drift_pct"] == 12.0
    assert sum("measuring it again" in m for m in logs) == 2 and "too unsteady" in logs[-1]
    calls.clear()
    lut = load_or_build_lut(tmp_path / "b", "digits", 1.0, DIGITS, 10, log=logs.append)
    assert calls == [30.0, 2.0] and lut.drift_pct == 2.0 and not lut.unsteady  # stops at a steady one


def test_drift_compares_the_fast_medians_of_the_two_halves():
    assert drift_pct([[1.0, 1.0], [3.0], [1.1, 5.0], [5.0, 1.1]]) == pytest.approx(10.0)  # rounds 0-1 vs 2-3
    assert drift_pct([[1.0]]) is None and drift_pct([[], [1.0]]) is None


class _Loaded(nn.Module):
    """Wraps a module; sleeps 3 ms in the calls ``loaded()`` says: another load on the machine."""

    def __init__(self, inner: nn.Module, loaded: Callable[[], bool]) -> None:
        super().__init__()
        self.inner, self.loaded = inner, loaded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.loaded():
            time.sleep(0.003)
        return self.inner(x)


def test_table_spreads_its_rounds_over_min_seconds_and_keeps_each_candidates_fastest_passes(monkeypatch):
    """Ten interleaved rounds spread over min_seconds; an entry is the layer's median over its network's
    fastest passes, so a phase of other load covering most of the passes does not move it, and the drift
    between the two halves says the machine moved."""
    until = [0.0]

    class LoadedNetwork(mobilenet_arch.MobileNetNetwork):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.stem = _Loaded(self.stem, lambda: time.perf_counter() < until[0])

    monkeypatch.setattr(mobilenet_arch, "MobileNetNetwork", LoadedNetwork)
    t0 = time.perf_counter()
    until[0] = t0 + 1.2  # loaded for the first 60% of the measurement
    times = measure_in_network("digits", 1.0, DIGITS, 10, warmup=1, repeats=10, min_seconds=2.0)
    assert time.perf_counter() - t0 >= 2.0
    assert times.entries["stem"] < 1.0  # ms: the unloaded passes' stem, not 3 ms of sleep
    assert all(v > 0 for v in times.entries.values())
    assert times.drift_pct is not None and times.drift_pct > UNSTEADY_DRIFT_PCT  # first half loaded, second not


def test_latency_is_the_fast_median_of_passes_spread_over_min_seconds():
    calls = iter(range(10**9))
    net = _Loaded(nn.Linear(4, 4), lambda: next(calls) % 10 < 6)  # 6 passes in 10 loaded
    t0 = time.perf_counter()
    out = measure_latency(net, (4,), warmup=0, repeats=5, min_seconds=0.3)
    assert time.perf_counter() - t0 >= 0.3 and out["latency_repeats"] > 5  # kept timing until 0.3 s had passed
    assert out["latency_ms"] < 1.0 < 3.0 <= out["latency_median_ms"]  # most passes loaded, the fastest not
    assert fast_median([float(v) for v in range(20, 0, -1)]) == 1.5  # the fastest 10%: 1.0 and 2.0
    assert fast_median([5.0, 1.0, 2.0], fraction=0.1) == 1.0  # at least one pass
    with pytest.raises(ValueError, match="no timed passes"):
        fast_median([])


def test_results_latency_is_measured_over_nas_latency_seconds(monkeypatch):
    monkeypatch.delenv("NAS_LATENCY_SECONDS")
    assert latency_seconds() == LATENCY_SECONDS == 3.0
    monkeypatch.setenv("NAS_LATENCY_SECONDS", "0.3")
    t0 = time.perf_counter()
    out = profile_network(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (1, 8, 8))
    assert time.perf_counter() - t0 >= 0.3 and out["latency_repeats"] > 50 and out["latency_ms"] > 0
    for bad in ("soon", "-1", "1e9"):
        monkeypatch.setenv("NAS_LATENCY_SECONDS", bad)
        with pytest.raises(ValueError, match=f"NAS_LATENCY_SECONDS='{bad}' is not a number of seconds"):
            latency_seconds()
    cfg = ExperimentConfig(strategy="random", space="nb201", dataset="digits")
    rep = MemoryReporter()
    with pytest.raises(ValueError, match="NAS_LATENCY_SECONDS"):
        run_experiment(cfg, rep)
    rep_train = MemoryReporter()
    with pytest.raises(ValueError, match="NAS_LATENCY_SECONDS"):  # the CLI's `train`
        train_genotype("nb201", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "digits", epochs=1, seed=0,
                       channels=2, cells_per_stage=1, lr=0.1, batch_size=8, reporter=rep_train)  # fmt: skip
    assert not rep.epochs and not rep.logs and not rep_train.epochs  # refused before any search or training


def test_table_measured_before_the_steady_allocator_is_read_but_measured_again(tmp_path, digits_lut):
    """A stored table from before malloc's thresholds were fixed still opens (the Monitor shows it), but a
    search measures a new one: its timings carry page faults the new measurements do not have."""
    doc = digits_lut.to_json()
    del doc["key"]["allocator"]
    old = LatencyLUT.from_json(doc)
    assert old.allocator == "default" and old.blocks == digits_lut.blocks
    key = lut_key("digits", 1.0, DIGITS, 10, 1, digits_lut.device, "network")  # how the old key was hashed
    del key["allocator"]
    path = lut_path(tmp_path, key)
    path.write_text(json.dumps(doc))
    lut = load_or_build_lut(tmp_path, "digits", 1.0, DIGITS, 10, **FAST_LUT)
    if steady_allocator() != "default":
        assert not lut.reused and lut.path != path and path.is_file()


_FAULTS_SCRIPT = """
import resource, sys, torch
from torch import nn
from nas_core.metrics import steady_allocator
torch.set_num_threads(1)
m = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 8, 1))
x = torch.randn(1, 3, 224, 224)  # 6.4 MB activations, as a 224x224 network's first blocks
def faults():  # median per pass: the heap may still grow once in the first passes, then it is steady
    per_pass = []
    with torch.inference_mode():
        for _ in range(3):
            m(x)
        for _ in range(11):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            m(x)
            per_pass.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return sorted(per_pass)[5]
print(faults(), steady_allocator(), faults())
"""


def test_steady_allocator_stops_page_faults_in_timed_forward_passes():
    """In a fresh process (glibc's thresholds untouched), megabyte activations fault their pages in on every
    forward pass; once :func:`steady_allocator` has run, none do, so latencies do not depend on what the
    process allocated before."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT], cwd=root, capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    before, mode, after = float(out[0]), out[1], float(out[2])
    if mode == "default":
        pytest.skip("not glibc: malloc's thresholds are left alone")
    assert mode == "glibc-steady"
    assert before > 100  # pages of a 6.4 MB buffer: ~1,600 per buffer; measured here ~4,700 per pass
    assert after < 5


def test_lut_frame_rows(digits_lut):
    df = lut_frame(digits_lut)
    assert list(df.columns)[:4] == ["block", "op", "input_shape", "latency_ms"]
    assert len(df) == 4 + sum(len(v) for v in digits_lut.blocks.values())
    row = df[(df["block"] == "s2.b1") & (df["op"] == "mb5_e6")].iloc[0]
    assert row["input_shape"] == "8x8x8" and row["latency_ms"] == digits_lut.blocks["s2.b1"]["mb5_e6"]


def test_predict_refuses_genotypes_outside_the_table(digits_lut):
    from nas_core.errors import GenotypeError

    mixed = json.dumps({"preset": "digits", "blocks": [{"3": 8}] * 6})
    with pytest.raises(GenotypeError, match="not one of ProxylessNAS's candidates"):
        predict_latency(digits_lut, mixed)
    with pytest.raises(GenotypeError, match="latency table is for 'digits'"):
        predict_latency(digits_lut, "mobilenetv2-cifar")


# ------------------------------------------------------------------------------------------- genotypes


def test_derived_genotypes_are_valid_for_the_space():
    for seed in range(6):
        net = _supernet(seed)
        with torch.no_grad():
            for a in net.arch_parameters():
                a.normal_(0, 2.0)
            net.mixed[1].alpha[-1] = 10.0  # zero wins a block that allows it
        g = net.genotype()
        text = SP.format(g)
        assert SP.parse(text) == g and g.blocks[1].name == "zero"
        assert [b.name for b in g.blocks] == net.chosen_ops()
        built = SP.build_network(text, 10, DIGITS)
        assert built(torch.randn(2, *DIGITS)).shape == (2, 10)
        net.set_chosen()
        assert sum(p.numel() for p in built.parameters()) > 0


# --------------------------------------------------------------------------------------- the strategy


def test_strategy_registered_for_mobilenet_only():
    s = STRATEGIES["proxylessnas"]
    assert s.spaces == ("mobilenet",)
    names = {p.name for p in s.params}
    assert {"target_latency_ms", "target_macs", "loss_type", "arch_every", "warmup_epochs", "lut_dir"} <= names
    with pytest.raises(ConfigError, match="does not support space"):
        ExperimentConfig(strategy="proxylessnas", space="nb201").validated()
    with pytest.raises(ConfigError, match="params.loss_type"):
        ExperimentConfig(strategy="proxylessnas", space="mobilenet", params={"loss_type": "log"}).validated()
    with pytest.raises(ConfigError, match="params.lut_dir"):
        ExperimentConfig(strategy="proxylessnas", space="mobilenet", params={"lut_dir": 3}).validated()


def _ctx(tmp_path: Path, **over) -> tuple[SearchContext, MemoryReporter]:
    params = {"lut_repeats": 3, "lut_warmup": 1, "lut_seconds": 0, "lut_dir": str(tmp_path / "luts"), "arch_every": 2}
    params |= over.pop("params", {})
    base = dict(strategy="proxylessnas", space="mobilenet", dataset="digits", epochs=2, batch_size=32,
                final_epochs=0, max_train_per_class=20, params=params)  # fmt: skip
    cfg = ExperimentConfig(**(base | over)).validated()
    rep = MemoryReporter(workdir=tmp_path)
    data = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction,
                        max_train_per_class=cfg.max_train_per_class)  # fmt: skip
    return SearchContext(cfg, get_space(cfg.space), data, rep), rep


def test_warmup_must_leave_search_epochs(tmp_path):
    with pytest.raises(ConfigError, match="params.warmup_epochs"):  # refused before anything is queued
        _ctx(tmp_path, params={"warmup_epochs": 2})


@pytest.mark.parametrize("resource", ["latency", "macs"])
def test_search_reports_alphas_series_and_genotypes(resource, tmp_path):
    ctx, rep = _ctx(tmp_path, params={"resource": resource, "arch_lr": 0.05})
    out = STRATEGIES["proxylessnas"].search(ctx)
    g = SP.parse(out.genotype)
    assert g.preset == "digits" and len(g.blocks) == 6
    steps = sorted({r[0] for r in rep.alpha_rows})
    first = {r[2:5]: r[5] for r in rep.alpha_rows if r[0] == steps[0]}
    last = {r[2:5]: r[5] for r in rep.alpha_rows if r[0] == steps[-1]}
    assert len(first) == 6 * len(OPS) and max(abs(first[k] - last[k]) for k in first) > 1e-3
    names = {n for _, _, n, _ in rep.series_points}
    chart = "latency" if resource == "latency" else "macs"
    assert {f"{chart}/expected", f"{chart}/target", "loss/ce", "loss/resource", "loss/total"} <= names
    assert len(rep.genotypes) == 2 and rep.genotypes[-1][2] == out.genotype
    assert rep.epochs[-1][0] == "search" and 0 <= out.accuracy <= 1
    if resource == "latency":
        assert "latency/derived" in names and out.extra["predicted_latency_ms"] > 0
        assert [e for e in rep.events if e[0] == "latency_lut"]
        assert len(list((tmp_path / "luts").glob("digits_*.json"))) == 1


def test_binary_mode_is_a_choice_defaulting_to_the_reference_full_v2():
    spec = {p.name: p for p in STRATEGIES["proxylessnas"].params}["binary_mode"]
    assert spec.default == "full_v2" and spec.choices == ("full_v2", "two") and "reference default" in spec.help
    cfg = ExperimentConfig(strategy="proxylessnas", space="mobilenet").validated()
    assert cfg.params["binary_mode"] == "full_v2"
    with pytest.raises(ConfigError, match="params.binary_mode"):
        ExperimentConfig(strategy="proxylessnas", space="mobilenet", params={"binary_mode": "full"}).validated()
    with pytest.raises(ValueError, match="unknown binary mode"):
        arch_step(_supernet(), None, None, None, None, 1.0, PARAMS | {"binary_mode": "one"})  # type: ignore[arg-type]


def test_both_binary_modes_search_end_to_end_through_run_experiment(tmp_path):
    """A tiny digits search in each mode through the pipeline (latency table built once, then reused)."""
    runs = {}
    for mode in BINARY_MODES:
        cfg = ExperimentConfig(
            strategy="proxylessnas", space="mobilenet", dataset="digits", epochs=2, batch_size=32, final_epochs=0,
            threads=1, max_train_per_class=20,
            params={"binary_mode": mode, "lut_repeats": 3, "lut_warmup": 1, "lut_seconds": 0,
                    "lut_dir": str(tmp_path / "luts"), "arch_every": 2, "arch_lr": 0.05},
        )  # fmt: skip
        rep = MemoryReporter(workdir=tmp_path / mode)
        res = run_experiment(cfg, rep)
        assert res.status == "succeeded" and SP.parse(res.genotype).preset == "digits"
        assert res.latency_ms > 0 and res.macs > 0 and len(rep.architectures) == 1
        assert any(f"arch step ({mode})" in m for _, _, m in rep.logs)
        names = {n for _, _, n, _ in rep.series_points}
        assert {"latency/expected", "latency/target", "loss/ce", "loss/resource", "latency/derived"} <= names
        steps = sorted({r[0] for r in rep.alpha_rows})
        first = {r[2:5]: r[5] for r in rep.alpha_rows if r[0] == steps[0]}
        last = {r[2:5]: r[5] for r in rep.alpha_rows if r[0] == steps[-1]}
        assert max(abs(first[k] - last[k]) for k in first) > 1e-3  # the alphas moved
        runs[mode] = last
    assert runs["full_v2"] != runs["two"]  # the modes update the alphas differently
    assert len(list((tmp_path / "luts").glob("*.json"))) == 1  # the second run reused the table


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_proxylessnas_through_the_worker(db: str, procs: Callable) -> None:  # noqa: F811
    cfg = {
        "strategy": "proxylessnas", "space": "mobilenet", "dataset": "digits", "epochs": 2, "final_epochs": 1,
        "batch_size": 32, "threads": 1, "max_train_per_class": 20,
        "params": {"lut_repeats": 3, "lut_warmup": 1, "lut_seconds": 0, "arch_every": 2, "target_latency_ms": 1.0},
    }  # fmt: skip
    exp_id = repo.create_experiment(cfg, name="proxyless-e2e")
    worker = procs("worker", "--once", "--poll", "0.2")
    out, _ = worker.communicate(timeout=180)
    assert worker.returncode == 0, out
    exp = repo.get_experiment(exp_id)
    assert exp["status"] == "succeeded", (exp["error"], exp["traceback"], out)
    g = SP.parse(exp["genotype"])
    assert g.preset == "digits" and exp["accuracy_kind"] == "test" and exp["latency_ms"] > 0
    alphas = repo.alphas_df(exp_id)
    assert alphas["edge"].nunique() == 6 and alphas["op"].nunique() == len(OPS) and alphas["step"].nunique() >= 3
    series = repo.series_df(exp_id)
    names = set(series["name"])
    assert {"latency/expected", "latency/target", "loss/ce", "loss/resource"} <= names
    assert set(series.loc[series["name"] == "latency/target", "value"]) == {1.0}
    assert len(repo.genotypes_df(exp_id)) == 2
    arch = repo.architectures_df([exp_id])
    assert len(arch) == 1 and arch["genotype"].iloc[0] == exp["genotype"]
    assert set(repo.epochs_df(exp_id)["phase"]) == {"search", "train"}
    luts = list((Path(repo.experiment_workdir(exp_id)).parents[0] / "latency_luts").glob("*.json"))
    events = repo.events_df(exp_id, "latency_lut")
    assert len(luts) == 1 and len(events) == 1 and events["data"].iloc[0]["path"] == str(luts[0])
