"""AtomNAS: exact shrinkage (outputs, MACs, optimiser state, EMA), the penalty weights, and a run through the worker."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_worker import procs  # noqa: F401  (fixture for the worker test)
from torch import nn

from nas_core.atomnas_shrink import (
    AtomState,
    block_kernel_ids,
    network_macs,
    penalty_weights,
    searchable_blocks,
    shrink_network,
)
from nas_core.metrics import count_macs
from nas_core.spaces import get_space
from nas_core.spaces.mobilenet_arch import Mixed, Zero, estimate_macs
from nas_core.spaces.mobilenet_blocks import InvertedResidual, atom_macs
from nas_core.strategies import STRATEGIES
from nas_core.strategies.atomnas import RMSpropTF, controller_factor, proximal_l1_, rho_ramp, setpoint
from storage import repo

SP = get_space("mobilenet")
SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")


def _supernet(seed: int = 0) -> nn.Module:
    """Digits supernet with random BN statistics and affine parameters, so every fold is exercised."""
    torch.manual_seed(seed)
    net = SP.build_supernet(10, SHAPE, style="atomnas")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _blocks(net: nn.Module) -> dict[str, int]:
    return {name: i for i, name in searchable_blocks(net)}


def _dead_masks(net: nn.Module, seed: int = 1) -> dict[int, torch.Tensor]:
    """Random dead atoms, plus the whole k3 branch of s2.b1 and the whole residual block s3.b2."""
    gen = torch.Generator().manual_seed(seed)
    idx = _blocks(net)
    masks = {}
    for name, i in idx.items():
        block = net.blocks[i]
        m = torch.rand(sum(block.hidden), generator=gen) < 0.4
        if name == "s2.b1":
            m[: block.hidden[0]] = True
        if name == "s3.b2":
            m[:] = True
        masks[i] = m
    return masks


def _zero_gammas(net: nn.Module, masks: dict[int, torch.Tensor]) -> None:
    with torch.no_grad():
        for i, m in masks.items():
            net.blocks[i].bn_dw.weight[m] = 0.0


def test_removing_atoms_with_zero_gamma_leaves_the_output_unchanged() -> None:
    net = _supernet()
    masks = _dead_masks(net)
    _zero_gammas(net, masks)
    x = torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = net(x)
    res = shrink_network(net, masks)
    with torch.no_grad():
        after = net(x)
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()
    g = net.current_genotype()
    idx = _blocks(net)
    assert isinstance(net.blocks[idx["s3.b2"]], nn.Identity) and res.vanished_blocks == ["s3.b2"]
    assert isinstance(g.blocks[list(idx).index("s3.b2")], Zero)
    first = g.blocks[0]
    assert isinstance(first, Mixed) and [k for k, _ in first.groups] == [5, 7]  # the k3 branch is gone
    assert "s2.b1/k3" in res.vanished_branches
    assert res.total == sum(int(m.sum()) for m in masks.values()) and res.removed["s3.b2"] == 3 * 144


def test_without_the_bn_fold_the_output_would_change() -> None:
    """The fold matters: zero-gamma atoms output act(beta) != 0, so the block's output changes unless it is
    folded into the projection BN's running mean (by exactly W[:, removed] @ act(beta[removed]))."""
    net = _supernet()
    i = _blocks(net)["s2.b2"]
    block = net.blocks[i]
    mask = torch.zeros(sum(block.hidden), dtype=torch.bool)
    mask[:10] = True
    _zero_gammas(net, {i: mask})
    plan = net.layout.blocks[i]
    h = torch.randn(2, plan.c_in, *plan.in_hw)
    with torch.no_grad():
        before = block(h)
        const = block.conv_project.weight[:, :10, 0, 0] @ torch.clamp(block.bn_dw.bias[:10], 0, 6)
        mean0 = block.bn_project.running_mean.clone()
        shrink_network(net, {i: mask})
        new = net.blocks[i]
        assert torch.allclose(new.bn_project.running_mean, mean0 - const, atol=1e-6)
        assert torch.allclose(before, new(h), atol=1e-5)
        assert const.abs().max() > 0.05
        new.bn_project.running_mean.copy_(mean0)  # without the fold
        assert not torch.allclose(before, new(h), atol=1e-2)


def test_macs_after_shrinking_equal_the_rebuilt_network() -> None:
    net = _supernet()
    masks = _dead_masks(net, seed=3)
    supernet_macs = count_macs(net, SHAPE)
    shrink_network(net, masks)
    g = net.current_genotype()
    rebuilt = SP.build_network(g, 10, SHAPE)
    macs = count_macs(net, SHAPE)
    assert macs < supernet_macs
    assert macs == count_macs(rebuilt, SHAPE) == estimate_macs(g, 10, SHAPE) == network_macs(net, 10, SHAPE)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in rebuilt.parameters())
    # same keys and shapes: the trained weights load into the network the genotype builds, outputs identical
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), net(x), atol=1e-6)
    # the MACs removed are exactly the dead atoms' MACs (a block costs the sum of its atoms)
    atoms = AtomState.from_network(_supernet(), 0.9)
    assert supernet_macs - macs == pytest.approx(atoms.dead_macs(masks))


def test_optimizer_state_and_ema_are_sliced_consistently() -> None:
    net = _supernet()
    net.train()
    opt = RMSpropTF(net.parameters(), lr=0.01)
    atoms = AtomState.from_network(net, 0.9)
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(8, *SHAPE)).logsumexp(1).mean().backward()
        opt.step()
        atoms.update_ema(net)
    i = _blocks(net)["s3.b1"]
    old = net.blocks[i]
    mask = torch.zeros(sum(old.hidden), dtype=torch.bool)
    mask[::3] = True
    keep = torch.nonzero(~mask).flatten()
    expect = {
        "expand": (opt.state[old.conv_expand.weight]["square_avg"][keep].clone(), 0),
        "project": (opt.state[old.conv_project.weight]["momentum_buffer"][:, keep].clone(), 1),
        "bn_dw": (opt.state[old.bn_dw.weight]["momentum_buffer"][keep].clone(), 0),
    }
    bn_proj_state = opt.state[old.bn_project.weight]["square_avg"].clone()
    ema_keep = atoms.ema[i][keep].clone()
    pen_keep = atoms.penalty[i][keep].clone()
    steps = opt.state[old.bn_dw.weight]["step"]
    shrink_network(net, {i: mask}, opt, atoms)
    new = net.blocks[i]
    assert new is not old and sum(new.hidden) == len(keep)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in net.parameters()}
    assert set(map(id, opt.state)) <= {id(p) for p in net.parameters()}
    for p in net.parameters():
        for key in ("square_avg", "momentum_buffer"):
            assert opt.state[p][key].shape == p.shape
    assert torch.equal(opt.state[new.conv_expand.weight]["square_avg"], expect["expand"][0])
    assert torch.equal(opt.state[new.conv_project.weight]["momentum_buffer"], expect["project"][0])
    assert torch.equal(opt.state[new.bn_dw.weight]["momentum_buffer"], expect["bn_dw"][0])
    assert torch.equal(opt.state[new.bn_project.weight]["square_avg"], bn_proj_state)
    assert opt.state[new.bn_dw.weight]["step"] == steps
    # depthwise filters: each branch's kept channels, in order
    kid = block_kernel_ids(old)[keep]
    for g, k in enumerate(new.kernels):
        assert opt.state[new.dw[g].weight]["square_avg"].shape[0] == int((kid == k).sum())
    assert torch.equal(atoms.ema[i], ema_keep) and torch.equal(atoms.penalty[i], pen_keep)
    assert atoms.ema[i].shape == new.bn_dw.weight.shape
    # the optimiser still steps the shrunk network
    opt.zero_grad()
    net(torch.randn(8, *SHAPE)).logsumexp(1).mean().backward()
    opt.step()


def test_penalty_weights_on_a_hand_computed_case() -> None:
    # two branches: 2 atoms of 10 MACs, 4 atoms of 40 MACs -> channel-weighted mean (20 + 160) / 6 = 30
    assert penalty_weights([(2, 10.0), (4, 40.0)]) == pytest.approx([1 / 3, 4 / 3])
    # one atom of a k3 branch, 8 -> 16 channels, stride 2, 8x8 input: expand 8*64, dw 9*16, project 16*16
    assert atom_macs(8, 16, 2, 3, (8, 8)) == 8 * 64 + 9 * 16 + 16 * 16
    net = SP.build_supernet(10, SHAPE, style="atomnas")
    atoms = AtomState.from_network(net, 0.9)
    rows, per_branch = [], {}
    for i, _ in searchable_blocks(net):
        plan, block = net.layout.blocks[i], net.blocks[i]
        for k, h in zip(block.kernels, block.hidden):
            f = atom_macs(plan.c_in, plan.c_out, plan.stride, k, plan.in_hw)
            rows.append((h, f))
            per_branch[(i, k)] = f
    mean = sum(h * f for h, f in rows) / sum(h for h, _ in rows)
    for i, _ in searchable_blocks(net):
        kid = block_kernel_ids(net.blocks[i])
        for k in (3, 5, 7):
            assert torch.allclose(atoms.penalty[i][kid == k], torch.tensor(per_branch[(i, k)] / mean))
    # normalised by the channel-weighted mean: the mean weight over all atoms is 1, bigger kernels weigh more
    n = sum(len(v) for v in atoms.penalty.values())
    assert sum(float(atoms.penalty[i].sum()) for i in atoms.penalty) / n == pytest.approx(1.0)
    i0 = searchable_blocks(net)[0][0]
    kid = block_kernel_ids(net.blocks[i0])
    assert atoms.penalty[i0][kid == 3][0] < atoms.penalty[i0][kid == 5][0] < atoms.penalty[i0][kid == 7][0]


def test_a_block_without_residual_keeps_its_strongest_atom() -> None:
    net = _supernet()
    i = _blocks(net)["s3.b1"]  # stride 2: cannot become the identity
    block = net.blocks[i]
    atoms = AtomState.from_network(net, 0.9)
    atoms.ema[i][:] = 0.0
    atoms.ema[i][37] = 0.5
    res = shrink_network(net, {i: torch.ones(sum(block.hidden), dtype=torch.bool)}, None, atoms)
    assert res.kept_last_atom == ["s3.b1"] and sum(net.blocks[i].hidden) == 1
    assert isinstance(net.blocks[i], InvertedResidual)
    assert net.blocks[i].kernels == (int(block_kernel_ids(block)[37]),)
    assert net(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_dead_rule_and_budgeted_masks() -> None:
    net = _supernet()
    atoms = AtomState.from_network(net, 0.9)
    i = _blocks(net)["s2.b2"]
    with torch.no_grad():
        net.blocks[i].bn_dw.weight[:4] = 1e-4
    atoms.ema[i][:2] = 1e-4  # atoms 0, 1: live and EMA small; 2, 3: only the live weight is small
    dead = atoms.dead_masks(net, 1e-3)
    assert dead[i][:4].tolist() == [True, True, False, False] and int(sum(m.sum() for m in dead.values())) == 2
    assert int(atoms.dead_masks(net, 1e-3, ema_only=True)[i].sum()) == 2
    live = atoms.dead_masks(net, 1e-3, live_only=True)  # what the controller counts: the live weight alone
    assert live[i][:4].all() and int(sum(m.sum() for m in live.values())) == 4
    with pytest.raises(ValueError, match="exclude"):
        atoms.dead_masks(net, 1e-3, ema_only=True, live_only=True)
    # least |EMA| first; at_least goes past the budget, at most stays within it
    per_atom = float(atoms.macs[i][0])
    most = atoms.lowest_atoms_mask(net, 1.5 * per_atom, at_least=False)
    least = atoms.lowest_atoms_mask(net, 1.5 * per_atom, at_least=True)
    assert atoms.dead_macs(most) <= 1.5 * per_atom <= atoms.dead_macs(least)
    assert most[i][:2].tolist() == [True, False] and sum(int(m.sum()) for m in most.values()) == 1
    assert least[i][:2].all() and sum(int(m.sum()) for m in least.values()) == 2
    only = {j: torch.zeros_like(m) for j, m in most.items()}
    only[i][1] = True  # restricted to candidates
    assert atoms.lowest_atoms_mask(net, 10 * per_atom, only)[i].nonzero().flatten().tolist() == [1]


def test_controller_and_ramp() -> None:
    assert rho_ramp(0, 10) == 0.0 and rho_ramp(5, 10) == 0.5 and rho_ramp(50, 10) == 1.0 and rho_ramp(3, 0) == 1.0
    assert controller_factor(2.0, 1.0, 1.0) == 2.0 and controller_factor(1.2, 1.0, 1.0) == pytest.approx(1.2)
    assert controller_factor(0.5, 1.0, 1.0) == 0.5 and controller_factor(0.1, 1.0, 1.0) == 0.5
    assert controller_factor(1.0, 1.0, 3.0) == 1.0
    # setpoint: flat until the warm-up ends, straight in log MACs to the target, then flat
    assert setpoint(0, 10, 30, 8.0, 2.0) == 8.0 and setpoint(10, 10, 30, 8.0, 2.0) == 8.0
    assert setpoint(20, 10, 30, 8.0, 2.0) == pytest.approx(4.0) and setpoint(99, 10, 30, 8.0, 2.0) == 2.0
    assert setpoint(5, 10, 10, 8.0, 2.0) == 8.0 and setpoint(11, 10, 10, 8.0, 2.0) == 2.0


def test_proximal_l1_puts_atoms_at_exactly_zero() -> None:
    """The proximal step soft-thresholds each gamma by lr * rho * c_j / ((1 - momentum) sqrt(square_avg + eps)):
    gammas under that go to exactly 0 (and stay there without a CE gradient), the others move by it, signs kept."""
    net = _supernet()
    atoms = AtomState.from_network(net, 0.9)
    opt = RMSpropTF(net.parameters(), lr=0.1, eps=1e-2, momentum=0.5)
    i = _blocks(net)["s3.b1"]
    w = net.blocks[i].bn_dw.weight
    with torch.no_grad():
        w.copy_(torch.linspace(-1.0, 1.0, len(w)))
    before = w.detach().clone()
    c = atoms.penalty[i]
    # no optimiser state yet: square_avg counts as 0
    tau = 0.1 * 0.2 * c / (0.5 * math.sqrt(1e-2))
    proximal_l1_(net, atoms, opt, lr=0.1, rho=0.2)
    expect = before.sign() * (before.abs() - tau).clamp_min(0)
    assert torch.allclose(w.detach(), expect, atol=1e-6)
    zeros = w.detach() == 0
    assert zeros.any() and (~zeros).any() and torch.equal(zeros, before.abs() <= tau)
    # with a square average the threshold shrinks as 1 / sqrt(square_avg + eps); rho 0 changes nothing
    opt.state[w]["square_avg"] = torch.full_like(w, 0.99)
    now = w.detach().clone()
    proximal_l1_(net, atoms, opt, lr=0.1, rho=0.0)
    assert torch.equal(w.detach(), now)
    proximal_l1_(net, atoms, opt, lr=0.1, rho=0.2)
    assert torch.allclose(w.detach(), now.sign() * (now.abs() - 0.1 * 0.2 * c / 0.5).clamp_min(0), atol=1e-6)
    assert torch.equal(w.detach()[zeros], torch.zeros(int(zeros.sum())))


def test_gamma_init_sets_every_atom_scale() -> None:
    from types import SimpleNamespace

    strategy = STRATEGIES["atomnas"]
    params = {p.name: p.default for p in strategy.params} | {"gamma_init": 0.25}
    ctx = SimpleNamespace(params=params, space=SP, data=SimpleNamespace(num_classes=10, input_shape=SHAPE))
    net = strategy.build_supernet(ctx)  # type: ignore[arg-type]
    for i, _ in searchable_blocks(net):
        assert torch.all(net.blocks[i].bn_dw.weight == 0.25)
    assert float(net.blocks[0].bn_dw.weight.detach()[0]) == 1.0  # the fixed first block is not an atom block


def test_registered_for_the_mobilenet_space() -> None:
    s = STRATEGIES["atomnas"]
    assert s.spaces == ("mobilenet",) and s.trains_network
    names = {p.name for p in s.params}
    assert {"target_macs", "rho", "threshold", "ema_decay", "warmup_fraction", "shrink_fraction"} <= names


def test_atomnas_through_the_worker(db: str, procs: Callable) -> None:  # noqa: F811
    cfg = {
        "strategy": "atomnas",
        "space": "mobilenet",
        "dataset": "digits",
        "epochs": 2,
        "final_epochs": 0,
        "batch_size": 128,
        "threads": 1,
        "max_train_per_class": 40,
        "params": {"target_macs": 0.6},
    }
    exp_id = repo.create_experiment(cfg, name="atomnas-e2e")
    worker = procs("worker", "--once", "--poll", "0.2")
    out, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, out
    exp = repo.get_experiment(exp_id)
    assert exp["status"] == "succeeded", (exp["error"], exp["traceback"], out)
    assert exp["progress"] == 1.0
    series = repo.series_df(exp_id)
    names = set(series["name"])
    assert {"macs/current", "macs/target", "params/current", "rho", "kernels/k3", "kernels/k5", "kernels/k7"} <= names
    assert {f"atoms/{b}" for b in ("s2.b1", "s2.b2", "s3.b1", "s3.b2", "s4.b1", "s4.b2")} <= names
    macs = series[series["name"] == "macs/current"].sort_values("step")["value"].tolist()
    assert len(macs) == 3 and macs[-1] < macs[0]
    events = repo.events_df(exp_id, "shrink")
    assert len(events) >= 1
    for d in events["data"]:
        assert {"removed", "macs_before", "macs_after"} <= set(d) and d["macs_after"] < d["macs_before"]
    assert len(repo.genotypes_df(exp_id)) == 3 and len(repo.epochs_df(exp_id)) == 2
    arch = repo.architectures_df([exp_id])
    assert len(arch) == 1
    row = arch.iloc[0]
    assert row["accuracy_kind"] == "test" and 0.0 <= row["accuracy"] <= 1.0 and math.isfinite(row["accuracy"])
    supernet = SP.build_supernet(10, SHAPE, style="atomnas")
    assert row["macs"] < count_macs(supernet, SHAPE)
    assert row["macs"] == estimate_macs(SP.parse(exp["genotype"]), 10, SHAPE)
    assert abs(row["macs"] - 0.6e6) / 0.6e6 <= 0.05
    kinds = set(repo.artifacts_df(exp_id)["kind"])
    assert {"genotype_json", "checkpoint", "torchscript"} <= kinds
    for path in repo.artifacts_df(exp_id)["path"]:
        assert Path(path).is_file()
