"""Each strategy takes real steps on tiny data; alphas move; the second-order gradient is right."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas_core.config import ExperimentConfig
from nas_core.data import load_dataset
from nas_core.errors import Cancelled
from nas_core.reporting import MemoryReporter
from nas_core.spaces import get_space
from nas_core.strategies import STRATEGIES, SearchContext
from nas_core.strategies.darts import unrolled_alpha_grads
from nas_core.strategies.multitrial import MultiTrialStrategy

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = dict(dataset="synthetic", epochs=1, batch_size=32, channels=4, cells_per_stage=1, final_epochs=0)


def _ctx(strategy: str, tmp_path: Path, **over) -> tuple[SearchContext, MemoryReporter]:
    cfg = ExperimentConfig(strategy=strategy, **{**TINY, **over}).validated()
    rep = MemoryReporter(workdir=tmp_path)
    data = load_dataset(cfg.dataset, cfg.seed)
    return SearchContext(cfg, get_space(cfg.space), data, rep), rep


# TE-NAS trains nothing (tests/test_tenas.py), multi-trial strategies have no alphas (tests/test_multitrial.py),
# `fixed` searches nothing (tests/test_fixed.py); strategies of other spaces have their own test files
GRADIENT_BASED = sorted(
    n
    for n, s in STRATEGIES.items()
    if n not in ("tenas", "fixed") and not isinstance(s, MultiTrialStrategy) and "nb201" in s.spaces
)
#: per-strategy extras so one epoch moves the alphas (PC-DARTS's default warm-up is 15 epochs)
EXTRA_PARAMS = {"pc-darts": {"warmup_epochs": 0}}


@pytest.mark.parametrize("name", GRADIENT_BASED)
def test_strategy_steps_and_alphas_move(name, tmp_path):
    ctx, rep = _ctx(name, tmp_path, params={"arch_lr": 3e-2, **EXTRA_PARAMS.get(name, {})})
    out = STRATEGIES[name].search(ctx)
    get_space("nb201").parse(out.genotype)  # a valid genotype
    steps = sorted({r[0] for r in rep.alpha_rows})
    first = {(c, e, o): w for s, _, c, e, o, w in rep.alpha_rows if s == steps[0]}
    last = {(c, e, o): w for s, _, c, e, o, w in rep.alpha_rows if s == steps[-1]}
    assert len(first) == 30 and len(steps) >= 3
    assert max(abs(first[k] - last[k]) for k in first) > 1e-3
    assert rep.epochs and rep.epochs[0][0] == "search" and 0.0 <= rep.epochs[0][2]["val_acc"] <= 1.0
    assert rep.genotypes and rep.progresses[-1][0] == pytest.approx(1.0)


def test_cancel_is_seen_at_the_next_step(tmp_path):
    ctx, rep = _ctx("darts", tmp_path)
    rep.stop_after_steps = 2
    with pytest.raises(Cancelled):
        STRATEGIES["darts"].search(ctx)


def test_same_seed_same_search(tmp_path):
    outs = []
    for _ in range(2):
        ctx, rep = _ctx("single-darts", tmp_path, params={"arch_lr": 3e-2})
        STRATEGIES["single-darts"].search(ctx)
        outs.append([r[-1] for r in rep.alpha_rows])
    assert outs[0] == pytest.approx(outs[1], abs=1e-6)


def test_second_order_gradient_matches_exact_unrolled_gradient(monkeypatch):
    """Finite-difference DARTS_V2 gradient vs autograd through the virtual step (no momentum buffer).

    ReLU makes alpha's gradient piecewise in w, so a finite difference across a kink is meaningless;
    the check swaps in a smooth activation to test the formula itself.
    """
    softplus = F.softplus
    monkeypatch.setattr(F, "relu", lambda x, inplace=False: softplus(x))
    torch.manual_seed(0)
    net = get_space("nb201").build_supernet(4, (3, 8, 8), 4, 1).double()
    for m in net.modules():  # running stats would differ between the two computations
        if isinstance(m, torch.nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = m.running_var = None
    with torch.no_grad():
        net.alpha.normal_()
    w_params, a_params = net.weight_parameters(), net.arch_parameters()
    xt, yt = torch.randn(8, 3, 8, 8).double(), torch.randint(0, 4, (8,))
    xv, yv = torch.randn(8, 3, 8, 8).double(), torch.randint(0, 4, (8,))
    xi, wd = 0.05, 3e-4
    opt = torch.optim.SGD(w_params, lr=xi, momentum=0.9)
    before = [p.detach().clone() for p in w_params]
    approx = unrolled_alpha_grads(net, w_params, a_params, opt, (xt, yt), (xv, yv), xi, 0.9, wd)
    assert all(torch.equal(p, b) for p, b in zip(w_params, before)), "weights must be restored"

    g = torch.autograd.grad(F.cross_entropy(net(xt), yt), w_params, create_graph=True)
    w_prime = {
        n: p - xi * (gi + wd * p.detach())
        for (n, p), gi in zip([(n, p) for n, p in net.named_parameters() if n != "alpha"], g)
    }
    w_prime["alpha"] = net.alpha
    loss_v = F.cross_entropy(torch.func.functional_call(net, w_prime, (xv,)), yv)
    exact = torch.autograd.grad(loss_v, a_params)[0]
    first_order = torch.autograd.grad(F.cross_entropy(net(xv), yv), a_params)[0]
    err = (approx[0] - exact).norm() / exact.norm()
    err_first = (first_order - exact).norm() / exact.norm()
    assert err < 0.02, float(err)
    assert err < err_first / 5
