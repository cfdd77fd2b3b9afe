"""PC-DARTS and GDAS: real steps on tiny data on both cell spaces, warm-up, tau schedule, sampling cost."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas_core.config import ExperimentConfig
from nas_core.data import Dataset, load_dataset
from nas_core.errors import ConfigError
from nas_core.reporting import MemoryReporter
from nas_core.spaces import get_space
from nas_core.spaces import nb201_arch as nb201_mod
from nas_core.strategies import STRATEGIES, SearchContext
from nas_core.strategies.gdas import tau_schedule
from nas_service.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_data(n_train: int = 48, n_val: int = 16, augment: bool = False) -> Dataset:
    """A handful of batches of the synthetic set (3x8x8, 10 classes)."""
    d = load_dataset("synthetic", 0)
    return replace(
        d,
        x_train=d.x_train[:n_train],
        y_train=d.y_train[:n_train],
        x_val=d.x_val[:n_val],
        y_val=d.y_val[:n_val],
        augment=augment,
    )


#: per space: channels and cells that keep a step fast (darts: C=8, N=1 -> 5 layers, two reductions)
SPACE_SETTINGS = {"nb201": dict(channels=8, cells_per_stage=1), "darts": dict(channels=8, cells_per_stage=1)}
#: the default K=4 at C=8: 2-channel partial ops on the reduction edges (crashed oneDNN before FactorizedReduce sliced)
PARTIAL_K = {"nb201": 4, "darts": 4}


def run_search(strategy: str, space: str, tmp_path: Path, data: Dataset | None = None, epochs: int = 1, **params):
    cfg = ExperimentConfig(
        strategy=strategy,
        space=space,
        dataset="synthetic",
        epochs=epochs,
        batch_size=16,
        final_epochs=0,
        params={"snapshots_per_epoch": 3, **params},
        **SPACE_SETTINGS[space],
    ).validated()
    rep = MemoryReporter(workdir=tmp_path)
    ctx = SearchContext(cfg, get_space(space), data if data is not None else tiny_data(), rep)
    return STRATEGIES[strategy].search(ctx), rep


def snapshots(rep: MemoryReporter) -> dict[int, dict[tuple[str, str, str], float]]:
    out: dict[int, dict[tuple[str, str, str], float]] = {}
    for step, _epoch, cell, edge, op, w in rep.alpha_rows:
        out.setdefault(step, {})[(cell, edge, op)] = w
    return out


def series(rep: MemoryReporter) -> dict[str, list[tuple[int, int, float]]]:
    out: dict[str, list[tuple[int, int, float]]] = {}
    for step, epoch, name, value in rep.series_points:
        out.setdefault(name, []).append((step, epoch, value))
    return out


@pytest.mark.parametrize("space", ["nb201", "darts"])
@pytest.mark.parametrize("strategy", ["pc-darts", "gdas"])
def test_takes_steps_moves_alphas_and_reports_series(strategy, space, tmp_path):
    extra = {"warmup_epochs": 0, "partial_k": PARTIAL_K[space]} if strategy == "pc-darts" else {}
    out, rep = run_search(strategy, space, tmp_path, arch_lr=3e-2, **extra)
    sp = get_space(space)
    sp.parse(out.genotype)  # valid for the space
    assert out.genotype == rep.genotypes[-1][2]
    snaps = snapshots(rep)
    steps = sorted(snaps)
    assert steps == [0, 1, 2, 3]  # 48 samples / batch 16, a snapshot per step
    first, last = snaps[0], snaps[3]
    assert len(first) == len(sp.cell_types) * len(sp.edges) * len(sp.ops)
    assert max(abs(first[k] - last[k]) for k in first) > 1e-3
    assert rep.progresses[-1][0] == pytest.approx(1.0) and 0.0 <= rep.epochs[0][2]["val_acc"] <= 1.0
    ser = series(rep)
    if strategy == "gdas":
        expected = {"tau"} | {f"entropy/{c}" for c in sp.cell_types}
        assert set(ser) == expected
        assert [s for s, _, _ in ser["tau"]] == steps
        for c in sp.cell_types:
            h = [v for _, _, v in ser[f"entropy/{c}"]]
            assert 0 < h[-1] <= torch.log(torch.tensor(float(len(sp.ops)))).item() + 1e-9
            assert h[0] != h[-1]
    else:
        assert set(ser) == {f"beta/{c}/{e}" for c in sp.cell_types for e in sp.edges}
        moved = 0.0
        for pts in ser.values():
            assert [s for s, _, _ in pts] == steps
            moved = max(moved, abs(pts[0][2] - pts[-1][2]))
        assert moved > 1e-4  # betas are stepped with the alphas
        for c in sp.cell_types:  # normalised over each node's incoming edges
            first_node = [e for e in sp.edges if e.split("<-")[0] == sp.edges[0].split("<-")[0]]
            assert sum(ser[f"beta/{c}/{e}"][-1][2] for e in first_node) == pytest.approx(1.0)


@pytest.mark.parametrize("strategy", ["darts", "darts-2nd", "single-darts"])
def test_darts_family_runs_on_the_darts_space(strategy, tmp_path):
    out, rep = run_search(strategy, "darts", tmp_path, data=tiny_data(n_train=32), arch_lr=3e-2)
    get_space("darts").parse(out.genotype)
    snaps = snapshots(rep)
    assert sorted(snaps) == [0, 1, 2]
    assert max(abs(snaps[0][k] - snaps[2][k]) for k in snaps[0]) > 1e-3
    assert {c for c, _, _ in snaps[0]} == {"normal", "reduce"}


def test_warmup_holds_alphas_and_betas_fixed(tmp_path):
    data = tiny_data(n_train=32)
    out, rep = run_search("pc-darts", "nb201", tmp_path, data=data, epochs=3, warmup_epochs=2, arch_lr=3e-2)
    snaps = snapshots(rep)
    by_epoch: dict[int, set[int]] = {}
    for step, epoch, *_ in rep.alpha_rows:
        by_epoch.setdefault(epoch, set()).add(step)
    start = snaps[0]
    for step in by_epoch[0] | by_epoch[1]:  # the two warm-up epochs: weights train, alphas do not move
        assert snaps[step] == start
    assert max(abs(snaps[max(by_epoch[2])][k] - start[k]) for k in start) > 1e-3
    ser = series(rep)
    warm_steps = by_epoch[0] | by_epoch[1]
    for pts in ser.values():
        vals = {v for s, _, v in pts if s in warm_steps}
        assert len(vals) == 1
    assert any(pts[-1][2] != pts[0][2] for pts in ser.values())
    # the weights did train during warm-up (loss is reported per epoch)
    assert rep.epochs[0][2]["train_loss"] > 0


def test_tau_follows_the_linear_schedule_exactly(tmp_path, monkeypatch):
    assert tau_schedule(0, 5, 10.0, 0.1) == 10.0
    assert tau_schedule(4, 5, 10.0, 0.1) == pytest.approx(0.1, abs=1e-12)
    assert tau_schedule(0, 1, 10.0, 0.1) == 10.0
    seen: list[float] = []
    original = nb201_mod.NB201SuperNet.set_tau

    def spy(self, tau):
        seen.append(tau)
        original(self, tau)

    monkeypatch.setattr(nb201_mod.NB201SuperNet, "set_tau", spy)
    _, rep = run_search("gdas", "nb201", tmp_path, data=tiny_data(n_train=32), epochs=4, tau_max=8.0, tau_min=0.5)
    expected = [8.0 - 7.5 * e / 3 for e in range(4)]
    assert seen == pytest.approx(expected, abs=1e-12)
    for _step, epoch, value in series(rep)["tau"]:
        assert value == pytest.approx(expected[epoch], abs=1e-12)


def test_nb201_gdas_computes_only_the_sampled_op(monkeypatch):
    torch.manual_seed(0)
    net = get_space("nb201").build_supernet(10, (3, 8, 8), 4, 2, mode="gdas")
    with torch.no_grad():
        net.alpha.normal_()
    calls: list[tuple[int, int, int]] = []
    original = nb201_mod.SearchCell.candidate

    def counting(self, k, o, x):
        calls.append((id(self), k, o))
        return original(self, k, o, x)

    monkeypatch.setattr(nb201_mod.SearchCell, "candidate", counting)
    convs: list[str] = []
    for cell in net.cells:
        if isinstance(cell, nb201_mod.SearchCell):
            for edge in cell.edges:
                edge.conv1.register_forward_hook(lambda *_: convs.append("c1"))
                edge.conv3.register_forward_hook(lambda *_: convs.append("c3"))
    n_cells = sum(isinstance(c, nb201_mod.SearchCell) for c in net.cells)
    for _ in range(3):
        calls.clear()
        convs.clear()
        out = net(torch.randn(4, 3, 8, 8))
        sample = net.last_sample
        assert len(calls) == n_cells * 6  # one op per edge per cell
        assert all(o == sample[k] for _, k, o in calls)  # the same sample in every cell
        n_conv = sum(nb201_mod.OPS[o] in ("nor_conv_1x1", "nor_conv_3x3") for o in sample)
        assert len(convs) == n_cells * n_conv
    out.sum().backward()
    assert net.alpha.grad is not None and net.alpha.grad.abs().sum() > 0  # straight-through reaches alpha


def test_darts_gdas_computes_only_the_sampled_op():
    torch.manual_seed(0)
    net = get_space("darts").build_supernet(10, (3, 8, 8), 4, 1, mode="gdas")
    with torch.no_grad():
        net.alpha_normal.normal_()
        net.alpha_reduce.normal_()
    calls: list[tuple[int, int, int]] = []
    for ci, cell in enumerate(net.cells):
        for k, mixed in enumerate(cell._ops):
            for o, op in enumerate(mixed._ops):
                op.register_forward_hook(lambda *_, key=(ci, k, o): calls.append(key))
    for _ in range(3):
        calls.clear()
        net(torch.randn(4, 3, 8, 8))
        expected = set()
        for ci, cell in enumerate(net.cells):
            sample = net.last_sample["reduce" if cell.reduction else "normal"]
            expected |= {(ci, k, o) for k, o in enumerate(sample) if o != 0}  # `none` is not computed at all
        assert len(calls) == len(set(calls)) and set(calls) == expected


def test_nb201_pcdarts_fused_equals_plain_and_betas_normalise():
    torch.manual_seed(0)
    net = get_space("nb201").build_supernet(10, (3, 8, 8), 8, 2, mode="pcdarts", partial_k=4)
    assert [p.shape for p in net.arch_parameters()] == [torch.Size([6, 5]), torch.Size([6])]
    cells = [c for c in net.cells if isinstance(c, nb201_mod.SearchCell)]
    assert {(c.c, e.conv3.weight.shape[0]) for c in cells for e in c.edges} == {(8, 2), (16, 4), (32, 8)}  # C/K
    with torch.no_grad():
        net.alpha.normal_()
        net.beta.normal_()
    b = net.edge_weights()["normal"].detach()
    assert b[0] == pytest.approx(1.0) and b[1:3].sum() == pytest.approx(1.0) and b[3:].sum() == pytest.approx(1.0)
    x = torch.randn(4, 3, 8, 8)
    out_f = net(x)
    out_f.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    for cell in net.cells:
        if isinstance(cell, nb201_mod.SearchCell):
            cell.fused = False
    out_p = net(x)
    out_p.square().sum().backward()
    assert torch.allclose(out_f, out_p, atol=1e-5, rtol=1e-4)
    for n, p in net.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-4, rtol=1e-3), n
    assert grads["beta"][1:].abs().sum() > 0  # betas get gradient (node 1 has one edge: its beta cannot)


def test_channel_shuffle_matches_the_reference_layout():
    x = torch.arange(8.0).reshape(1, 8, 1, 1)
    assert nb201_mod.channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert torch.equal(nb201_mod.channel_shuffle(x, 1), x)


def test_gumbel_sample_is_straight_through_one_hot():
    torch.manual_seed(0)
    alpha = torch.randn(6, 5, requires_grad=True)
    hard, index = nb201_mod.gumbel_hard_sample(alpha, 1.0)
    assert torch.allclose(hard.detach(), F.one_hot(torch.tensor(index), 5).float(), atol=1e-6)
    (hard * torch.arange(5.0)).sum().backward()
    assert alpha.grad.abs().sum() > 0


def test_augmentation_applies_to_weight_batches_only(tmp_path, monkeypatch):
    import nas_core.augment as aug

    shapes: list[tuple[int, ...]] = []
    original = aug.random_crop_flip

    def spy(x, generator, *a, **k):
        shapes.append(tuple(x.shape))
        return original(x, generator, *a, **k)

    monkeypatch.setattr(aug, "random_crop_flip", spy)
    run_search("gdas", "nb201", tmp_path, data=tiny_data(n_train=40, augment=True))
    assert shapes == [(16, 3, 8, 8), (16, 3, 8, 8), (8, 3, 8, 8)]  # the three training batches, no val batch
    shapes.clear()
    run_search("gdas", "nb201", tmp_path, data=tiny_data(n_train=40, augment=False))
    assert shapes == []


def test_bad_settings_name_the_field(tmp_path):
    with pytest.raises(ConfigError) as err:
        run_search("pc-darts", "nb201", tmp_path, partial_k=3)  # 8 channels
    assert err.value.field == "params.partial_k"
    with pytest.raises(ConfigError) as err:
        run_search("gdas", "nb201", tmp_path, tau_max=0.5, tau_min=1.0)
    assert err.value.field == "params.tau_min"


def test_strategies_listed_with_params(capsys):
    assert main(["strategies", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by_name = {s["name"]: s for s in doc["strategies"]}
    pc = {p["name"]: p for p in by_name["pc-darts"]["params"]}
    gd = {p["name"]: p for p in by_name["gdas"]["params"]}
    assert pc["partial_k"]["default"] == 4 and pc["partial_k"]["kind"] == "int"
    assert pc["warmup_epochs"]["default"] == 15 and "15 of 50" in pc["warmup_epochs"]["help"]
    assert pc["w_lr"]["default"] / pc["arch_lr"]["default"] == pytest.approx(0.1 / 6e-4)  # the reference's ratio
    assert gd["tau_max"]["default"] == 10.0 and gd["tau_min"]["default"] == 0.1
    assert gd["arch_lr"]["default"] == pytest.approx(3e-4) and gd["arch_weight_decay"]["default"] == pytest.approx(1e-3)
    for name in ("pc-darts", "gdas", "darts", "darts-2nd", "single-darts"):
        assert set(by_name[name]["spaces"]) == {"nb201", "darts"}


@pytest.mark.parametrize(
    ("partial_k", "size", "channels_last"),
    [(4, 16, True), (4, 16, False), (2, 9, True), (1, 8, True)],
)
def test_darts_pcdarts_fused_equals_edge_by_edge_reference(partial_k, size, channels_last):
    """The fused PC-DARTS cell (all edges of a source in one call, kron products, one-copy shuffle) is the
    per-edge reference maths: outputs and gradients of every weight, alpha and beta, in float64.

    16x16 runs the phase-split dilated convs, padded explicitly where the kernel is wider than the
    sub-image (8x8 and 4x4 stages); 9x9 the odd-size direct convs and ceil-mode bypass pool; K=1 no bypass.
    """
    torch.manual_seed(0)
    sp = get_space("darts")
    fused = sp.build_supernet(10, (3, size, size), 8, 1, mode="pcdarts", partial_k=partial_k).double()
    plain = sp.build_supernet(10, (3, size, size), 8, 1, mode="pcdarts", partial_k=partial_k, fused=False).double()
    plain.load_state_dict(fused.state_dict())
    with torch.no_grad():
        for p, q in zip(fused.arch_parameters(), plain.arch_parameters()):
            p.normal_()
            q.copy_(p)
    x = torch.randn(3, 3, size, size, dtype=torch.float64)
    xf = x
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
        xf = x.contiguous(memory_format=torch.channels_last)
    yf, yp = fused(xf), plain(x)
    torch.testing.assert_close(yf, yp, rtol=1e-9, atol=1e-10)
    target = torch.tensor([1, 4, 7])
    F.cross_entropy(yf, target).backward()
    F.cross_entropy(yp, target).backward()
    names = [name for name, _ in fused.named_parameters()]
    assert {"alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"} <= set(names)
    for name, p, q in zip(names, fused.parameters(), plain.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            scale = float(q.grad.abs().max())
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9 * scale + 1e-12, msg=name)
    for p in fused.arch_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("strategy", ["darts", "pc-darts", "gdas"])
def test_the_darts_supernet_recomputes_on_the_cpu_only(strategy, tmp_path, monkeypatch):
    """Recomputing in backward saves memory on the CPU at the same speed but doubles a GPU step's launches
    (measured on an H200), so the space picks it by device and the one-shot loop passes its choice on."""
    space = get_space("darts")
    assert space.supernet_device_options(torch.device("cpu")) == {"recompute": True}
    assert space.supernet_device_options(torch.device("cuda", 0)) == {"recompute": False}
    assert get_space("nb201").supernet_device_options(torch.device("cuda")) == {}
    cfg = ExperimentConfig(strategy=strategy, space="darts", dataset="synthetic", epochs=1, batch_size=16,
                           final_epochs=0, **SPACE_SETTINGS["darts"]).validated()  # fmt: skip
    ctx = SearchContext(cfg, space, tiny_data(), MemoryReporter(workdir=tmp_path))
    assert all(cell.recompute for cell in STRATEGIES[strategy].setup(ctx).net.cells)
    monkeypatch.setattr(type(space), "supernet_device_options", lambda self, device: {"recompute": False})
    assert not any(cell.recompute for cell in STRATEGIES[strategy].setup(ctx).net.cells)
