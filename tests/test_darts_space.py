"""DARTS cell space: counts against the reference, genotype I/O, derivation rules, supernet modes, eval net."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from nas_core.augment import cutout, random_crop_flip
from nas_core.errors import ConfigError, GenotypeError
from nas_core.metrics import count_params
from nas_core.spaces import get_space
from nas_core.spaces.darts import DartsNetwork, DartsSuperNet, derive_cell, normalise_betas
from nas_core.spaces.darts_genotype import EDGES, OPS, PRESETS, DartsGenotype, format_genotype
from nas_core.spaces.darts_ops import Identity, channel_shuffle

SP = get_space("darts")


pytestmark = pytest.mark.usefixtures("one_thread")


V2_TEXT = format_genotype(PRESETS["DARTS_V2"])


def _json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# space metadata and counts


def test_space_metadata() -> None:
    assert SP.name == "darts" and SP.cell_types == ("normal", "reduce")
    assert SP.ops == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                      "dil_conv_3x3", "dil_conv_5x5")  # fmt: skip
    assert SP.edges[:5] == ("2<-0", "2<-1", "3<-0", "3<-1", "3<-2") and len(SP.edges) == 14 and SP.edges[-1] == "5<-4"
    assert SP.param_free_ops == {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"}
    assert set(SP.presets()) == {"DARTS_V1", "DARTS_V2", "PC_DARTS", "GDAS_V1"}


def test_search_supernet_has_the_reference_parameter_count() -> None:
    # ALGORITHMS.md: DARTS search supernet, C=16, 8 layers, 10 classes: 1,930,618 parameters, alphas excluded.
    for mode, n_arch in (("darts", 2), ("gdas", 2)):
        net = SP.build_supernet(10, (3, 32, 32), 16, 2, mode=mode)
        assert net.layers == 8
        assert sum(p.numel() for p in net.weight_parameters()) == 1_930_618
        assert len(net.arch_parameters()) == n_arch
        assert all(a.shape == (14, 8) for a in net.arch_parameters())
        total = sum(p.numel() for p in net.parameters())
        assert total == 1_930_618 + 2 * 14 * 8
    pc = SP.build_supernet(10, (3, 32, 32), 16, 2, mode="pcdarts")
    assert [tuple(a.shape) for a in pc.arch_parameters()] == [(14, 8), (14, 8), (14,), (14,)]
    assert sum(p.numel() for p in pc.weight_parameters()) < 1_930_618  # ops see C/4 channels


# Pinned counts of the evaluation network (C=36, 20 layers, auxiliary head built but excluded, 10 classes).
# Verified against xautodl's NASNet-on-CIFAR inference network (xautodl.nas_infer_model.DXYs.CifarNet with
# C=36, N=6, stem multiplier 3, auxiliary=True; params minus auxiliary_param()), built from the same genotypes
# (and, for DARTS_V1/V2/GDAS_V1, from xautodl's own genotype objects): equal to the unit. With the head included:
# DARTS_V2 3,825,768 (head: 476,426 parameters).
PINNED_EVAL = {"DARTS_V1": 3_169_414, "DARTS_V2": 3_349_342, "PC_DARTS": 3_634_678, "GDAS_V1": 3_368_782}


@pytest.mark.parametrize("name", sorted(PINNED_EVAL))
def test_evaluation_network_counts_match_the_reference(name: str) -> None:
    net = SP.build_network(name, 10, (3, 32, 32), 36, 6, auxiliary=True)
    assert net.layers == 20 and [i for i, c in enumerate(net.cells) if c.reduction] == [6, 13]
    assert count_params(net) == PINNED_EVAL[name]
    if name == "DARTS_V2":
        assert sum(p.numel() for p in net.parameters()) == 3_825_768
        no_aux = SP.build_network(name, 10, (3, 32, 32), 36, 6)
        assert count_params(no_aux) == sum(p.numel() for p in no_aux.parameters()) == PINNED_EVAL[name]


# --------------------------------------------------------------------------------------------------
# genotype I/O


def test_text_json_and_preset_round_trips() -> None:
    for name, g in PRESETS.items():
        assert SP.parse(name) == g and SP.parse(name.lower()) == g
        text = SP.format(g)
        assert text.startswith("Genotype(normal=[(") and SP.parse(text) == g
        doc = SP.to_json(g)
        assert json.loads(json.dumps(doc)) == doc and SP.from_json(doc) == g
        assert SP.parse(json.dumps(doc)) == g
        assert SP.from_json({"space": "darts", "normal": doc["normal"], "reduce": doc["reduce"]}) == g
    assert SP.from_json({"space": "darts", "preset": "PC_DARTS"}) == PRESETS["PC_DARTS"]
    assert SP.presets()["DARTS_V2"] == V2_TEXT
    # the forms the reference repositories print: range(2, 6) concat (PC-DARTS logs), AutoDL's per-node nesting
    pc_log = V2_TEXT.replace("[2, 3, 4, 5]", "range(2, 6)")
    assert "range(2, 6)" in pc_log and SP.parse(pc_log) == PRESETS["DARTS_V2"]
    g = PRESETS["GDAS_V1"]
    nested = "Genotype(normal=[{}], normal_concat=[2, 3, 4, 5], reduce=[{}], reduce_concat=[2, 3, 4, 5])".format(
        ", ".join(f"({g.normal[2 * i]!r}, {g.normal[2 * i + 1]!r})" for i in range(4)),
        ", ".join(f"({g.reduce[2 * i]!r}, {g.reduce[2 * i + 1]!r})" for i in range(4)),
    )
    assert SP.parse(nested) == g
    assert SP.parse("genotypes.Genotype" + V2_TEXT[len("Genotype") :]) == PRESETS["DARTS_V2"]


def _bad(normal: str = "", reduce: str = "", nconcat: str = "[2, 3, 4, 5]") -> str:
    """A valid genotype text with one part replaced."""
    n = normal or "[" + ", ".join(["('sep_conv_3x3', 0), ('sep_conv_3x3', 1)"] * 4) + "]"
    r = reduce or "[" + ", ".join(["('max_pool_3x3', 0), ('max_pool_3x3', 1)"] * 4) + "]"
    return f"Genotype(normal={n}, normal_concat={nconcat}, reduce={r}, reduce_concat=[2, 3, 4, 5])"


PAIRS4 = "('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (_bad(normal="[" + PAIRS4 * 4 + "]"), ["normal cell", "expected 8", "got 16"]),
        (_bad(normal="[('sep_conv_3x3', 0)]"), ["normal cell", "expected 8", "got 1"]),
        (  # a one-node cell (as progressive search grows them) concatenates node 2 only
            _bad(normal="[('sep_conv_3x3', 0), ('skip_connect', 1)]"),
            ["normal_concat", "not an intermediate node (2..2)"],
        ),
        (
            _bad(normal="[" + PAIRS4 + PAIRS4.replace("('sep_conv_3x3', 1)", "('conv_7x7', 1)", 1) + "]"),
            ["normal cell", "node 4", "unknown op 'conv_7x7'"],
        ),
        (
            _bad(reduce="[" + PAIRS4 + "('max_pool_3x3', 0), ('none', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1)]"),
            ["reduce cell", "node 4", "'none'"],
        ),
        (
            _bad(normal="[('sep_conv_3x3', 0), ('sep_conv_3x3', 2), " + PAIRS4 + "('sep_conv_3x3', 0), ('a', 1)]"),
            ["normal cell", "node 2", "input index 2 out of range", "0..1"],
        ),
        (
            _bad(normal="[" + PAIRS4 + "('sep_conv_3x3', 0), ('sep_conv_3x3', 4), ('sep_conv_3x3', 5), ('s', 1)]"),
            ["normal cell", "node 4", "input index 4 out of range", "0..3"],
        ),
        (_bad(normal="[" + PAIRS4 + PAIRS4.replace("0)", "-1)", 1) + "]"), ["node 4", "input index -1"]),
        (_bad(normal="[" + PAIRS4 + PAIRS4.replace("0)", "'x')", 1) + "]"), ["node 4", "must be an integer"]),
        (_bad(nconcat="[2, 3, 3]"), ["normal_concat", "twice"]),
        (_bad(nconcat="[1, 2]"), ["normal_concat", "not an intermediate node"]),
        (_bad(nconcat="__import__('os').getcwd()"), ["normal_concat", "only literals"]),
        ("Genotype(normal=[], reduce=[], foo=1)", ["unknown field", "foo"]),
        ("Genotype(normal=[])", ["missing field", "reduce"]),
        ("NotAGenotype(normal=[])", ["expected Genotype("]),
        ("Genotype(normal=[", ["not valid"]),
        ("DARTS_V9", ["unknown DARTS preset", "DARTS_V2"]),
        ("", ["empty"]),
        ('{"space": "nb201", "arch": "x"}', ["not darts"]),
        ("{nope", ["not valid JSON"]),
    ],
)
def test_validation_errors_name_the_problem(text: str, needles: list[str]) -> None:
    with pytest.raises(GenotypeError) as info:
        SP.parse(text)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_json_document_disagreement_and_direct_construction_are_checked() -> None:
    doc = SP.to_json("DARTS_V2")
    doc["normal"][0] = ["dil_conv_5x5", 0]
    with pytest.raises(GenotypeError, match="disagree"):
        SP.from_json(doc)
    with pytest.raises(GenotypeError, match="reduce cell, node 2: the 'none' op"):
        DartsGenotype(PRESETS["DARTS_V2"].normal, (2, 3, 4, 5), (("none", 0),) + PRESETS["DARTS_V2"].reduce[1:],
                      (2, 3, 4, 5))  # fmt: skip


def test_to_dot_draws_both_cells() -> None:
    dot = SP.to_dot("DARTS_V2")
    assert dot.startswith("digraph") and "cluster_normal" in dot and "cluster_reduce" in dot
    assert 'label="normal cell"' in dot and 'label="reduction cell"' in dot
    assert dot.count("c_{k-2}") == 2 and dot.count("c_{k-1}") == 2 and dot.count('label="c_{k}"') == 2
    assert 'n_0 -> n_5 [label="skip_connect"' in dot and 'n_2 -> n_5 [label="dil_conv_3x3"' in dot
    assert 'r_1 -> r_2 [label="max_pool_3x3"' in dot
    assert dot.count("[label=") - dot.count('[label="c_') - 2 * 4 == 16  # 8 op edges per cell
    assert dot.count("style=dashed") == 8  # 4 concat edges per cell


# --------------------------------------------------------------------------------------------------
# derivation rules on hand-set weights

I = {op: i for i, op in enumerate(OPS)}  # noqa: E741


def _weights(entries: dict[tuple[str, str], float]) -> torch.Tensor:
    """14x8 softmax-like weights: the given entries, the rest of each row shared equally (rows sum to 1)."""
    w = torch.full((14, 8), float("nan"))
    for (edge, op), v in entries.items():
        w[EDGES.index(edge), I[op]] = v
    for row in w:
        free = row.isnan()
        row[free] = (1.0 - row[~free].sum()) / free.sum()
    assert torch.allclose(w.sum(1), torch.ones(14)) and (w > 0).all()
    return w


def test_darts_rule_top2_edges_excluding_none() -> None:
    w = _weights({
        ("2<-0", "none"): 0.9, ("2<-0", "sep_conv_3x3"): 0.05,   # none is strongest but never counts
        ("2<-1", "dil_conv_5x5"): 0.3,
        ("3<-0", "max_pool_3x3"): 0.2, ("3<-1", "none"): 0.99, ("3<-2", "skip_connect"): 0.4,
        ("4<-3", "sep_conv_5x5"): 0.5, ("4<-1", "avg_pool_3x3"): 0.45, ("4<-0", "dil_conv_3x3"): 0.44,
        ("5<-4", "skip_connect"): 0.7, ("5<-2", "sep_conv_3x3"): 0.6, ("5<-3", "sep_conv_3x3"): 0.59,
    })  # fmt: skip
    assert derive_cell(w, "darts") == [
        ("dil_conv_5x5", 1), ("sep_conv_3x3", 0),
        ("skip_connect", 2), ("max_pool_3x3", 0),
        ("sep_conv_5x5", 3), ("avg_pool_3x3", 1),
        ("skip_connect", 4), ("sep_conv_3x3", 2),
    ]  # fmt: skip
    net = SP.build_supernet(10, (3, 8, 8), 4, 1, mode="darts")
    with torch.no_grad():
        net.alpha_normal.copy_(w.log())
        net.alpha_reduce.copy_(w.log())
    g = net.genotype()
    assert list(g.normal) == derive_cell(w, "darts") and g.normal == g.reduce and g.normal_concat == (2, 3, 4, 5)


def test_pcdarts_rule_ranks_edges_with_normalised_betas() -> None:
    w = _weights({("2<-0", "sep_conv_3x3"): 0.5, ("2<-1", "sep_conv_5x5"): 0.4, ("3<-0", "max_pool_3x3"): 0.5,
                  ("3<-1", "skip_connect"): 0.4, ("3<-2", "dil_conv_3x3"): 0.3})  # fmt: skip
    beta = torch.zeros(14)
    beta[3] = 3.0  # node 3 prefers the edge from input 1 strongly: 0.4 * big > 0.5 * small
    beta[4] = 2.0
    scale = normalise_betas(beta)
    assert torch.allclose(scale[0:2].sum(), torch.tensor(1.0)) and torch.allclose(scale[5:9], torch.full((4,), 0.25))
    plain = derive_cell(w, "darts")
    pc = derive_cell(w, "darts", scale)
    assert plain[2:4] == [("max_pool_3x3", 0), ("skip_connect", 1)]
    assert pc[2:4] == [("skip_connect", 1), ("dil_conv_3x3", 2)]
    assert pc[:2] == plain[:2]  # equal betas on node 2: unchanged
    net = SP.build_supernet(10, (3, 8, 8), 4, 1, mode="pcdarts")
    with torch.no_grad():
        net.alpha_normal.copy_(w.log())
        net.beta_normal.copy_(beta)
    assert list(net.genotype().normal) == pc
    assert torch.allclose(net.edge_weights()["normal"], scale)
    with pytest.raises(RuntimeError, match="pcdarts"):
        SP.build_supernet(10, (3, 8, 8), 4, 1).edge_weights()


def test_gdas_rule_pools_op_input_candidates() -> None:
    # node 2: both picks from edge 2<-1 (two ops of one edge); the darts rule would take one op per edge
    w = _weights({("2<-1", "sep_conv_3x3"): 0.5, ("2<-1", "dil_conv_3x3"): 0.4, ("2<-0", "skip_connect"): 0.3,
                  ("3<-0", "none"): 0.7, ("3<-0", "avg_pool_3x3"): 0.2, ("3<-1", "none"): 0.9,
                  ("3<-2", "none"): 0.9, ("3<-2", "max_pool_3x3"): 0.08})  # fmt: skip
    g = derive_cell(w, "gdas")
    assert g[:2] == [("sep_conv_3x3", 1), ("dil_conv_3x3", 1)]
    assert g[2:4] == [("avg_pool_3x3", 0), ("max_pool_3x3", 2)]
    assert derive_cell(w, "darts")[:2] == [("sep_conv_3x3", 1), ("skip_connect", 0)]
    net = SP.build_supernet(10, (3, 8, 8), 4, 1, mode="gdas")
    with torch.no_grad():
        net.alpha_reduce.copy_(w.log())
    assert list(net.genotype().reduce) == g


# --------------------------------------------------------------------------------------------------
# supernet modes


def _twin(mode: str, channels: int = 8, dtype: torch.dtype = torch.float32) -> tuple[DartsSuperNet, DartsSuperNet]:
    torch.manual_seed(0)
    a = SP.build_supernet(10, (3, 12, 12), channels, 1, mode=mode).to(dtype)
    b = SP.build_supernet(10, (3, 12, 12), channels, 1, mode=mode, fused=False).to(dtype)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for p, q in zip(a.arch_parameters(), b.arch_parameters()):
            p.normal_()
            q.copy_(p)
    return a, b


@pytest.mark.parametrize(
    ("mode", "size", "channels_last"),
    [("darts", 11, False), ("pcdarts", 11, False), ("darts", 4, False), ("darts", 12, True), ("pcdarts", 8, True)],
)
# (channels-last PC-DARTS with C=8, i.e. 2-channel ops, aborts inside torch's CPU backward - the per-edge
# reference path too - so the channels-last PC-DARTS case uses C=16.)
def test_fused_supernet_equals_the_reference_style_path(mode: str, size: int, channels_last: bool) -> None:
    # 11: odd sizes (stride-2 ops, factorized reduce, bypass pool agree); 4: down to 1x1 maps (a CPU BN backward
    # bug with an expanded weight showed there); 12/8: even sizes take the phase-split dilated convs.
    # float64, so the two paths must agree to rounding (float32 differs by kernel summation order)
    a, b = _twin(mode, 16 if channels_last and mode == "pcdarts" else 8, torch.float64)
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    xa = x
    if channels_last:
        a = a.to(memory_format=torch.channels_last)
        xa = x.contiguous(memory_format=torch.channels_last)
    ya, yb = a(xa), b(x)
    assert ya.shape == (4, 10) and torch.allclose(ya, yb, atol=1e-10)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9 * float(q.grad.abs().max()) + 1e-12)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in a.arch_parameters())


@pytest.mark.parametrize("mode", ["darts", "pcdarts"])
def test_keeping_activations_equals_recomputing_them(mode: str) -> None:
    """A GPU search keeps the separable ops' activations (``recompute=False``); the CPU's default re-runs the
    second depthwise conv in backward. Both must give the same outputs and gradients."""
    a, _ = _twin(mode, dtype=torch.float64)
    b = SP.build_supernet(10, (3, 12, 12), 8, 1, mode=mode, recompute=False).to(torch.float64)
    b.load_state_dict(a.state_dict())
    assert all(cell.recompute for cell in a.cells) and not any(cell.recompute for cell in b.cells)
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, rtol=0, atol=1e-12)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_channels_last_supernet_matches() -> None:
    a, _ = _twin("darts")
    x = torch.randn(2, 3, 12, 12)
    ref = a(x)
    a = a.to(memory_format=torch.channels_last)
    assert torch.allclose(a(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-5)


def test_gdas_computes_only_the_sampled_op_and_gives_alpha_a_gradient() -> None:
    torch.manual_seed(1)
    net = SP.build_supernet(10, (3, 8, 8), 4, 1, mode="gdas")
    net.set_tau(5.0)
    assert net.tau == 5.0
    calls: dict[tuple[int, int, int], int] = {}

    def hook(key):
        def fn(mod, inp, out):
            calls[key] = calls.get(key, 0) + 1

        return fn

    for c, cell in enumerate(net.cells):
        for k, mixed in enumerate(cell._ops):
            for o, op in enumerate(mixed._ops):
                op.register_forward_hook(hook((c, k, o)))
    y = net(torch.randn(3, 3, 8, 8))
    sample = net.last_sample
    expected = {(c, k, o) for c, cell in enumerate(net.cells)
                for k, o in enumerate(sample["reduce" if cell.reduction else "normal"]) if o != 0}  # fmt: skip
    assert set(calls) == expected and all(v == 1 for v in calls.values())
    assert len(sample["normal"]) == len(sample["reduce"]) == 14
    F.cross_entropy(y, torch.tensor([0, 1, 2])).backward()
    for alpha, cell_type in ((net.alpha_normal, "normal"), (net.alpha_reduce, "reduce")):
        assert alpha.grad is not None and alpha.grad.abs().sum() > 0
        # only sampled (op) entries feed the output, but softmax spreads each edge's gradient over its row
        rows = [k for k, o in enumerate(sample[cell_type]) if o != 0]
        assert all(alpha.grad[k].abs().sum() > 0 for k in rows)
    net.eval()
    with torch.no_grad():
        net(torch.randn(1, 3, 8, 8))  # eval mode samples too, as the reference
    with pytest.raises(ValueError):
        net.set_tau(0.0)


def test_pcdarts_partial_channels_bypass_and_shuffle() -> None:
    x = torch.arange(8).float().view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    net = SP.build_supernet(10, (3, 16, 16), 8, 1, mode="pcdarts", partial_k=4)
    red = next(c for c in net.cells if c.reduction)
    assert red.c == 16 and red.c_op == 4
    edge = red._ops[0]  # 2<-0, stride 2
    assert edge.stride == 2
    sep = edge._ops[OPS.index("sep_conv_3x3")]
    assert sep.op[1].weight.shape == (4, 1, 3, 3)  # built for C/K channels
    assert edge._ops[OPS.index("skip_connect")].conv_1.weight.shape == (2, 4, 1, 1)  # factorized reduce on C/K
    s_pp = torch.randn(2, red.preprocess0.op[1].in_channels, 9, 9)
    s_p = torch.randn(2, red.preprocess1.op[1].in_channels, 9, 9)
    betas = normalise_betas(net.beta_reduce)
    w = F.softmax(net.alpha_reduce, -1) * betas[:, None]
    # odd input: ops and the bypass's 2x2 max pool both give ceil(9/2); output 4 nodes x C channels
    fused = red.forward_fused(s_pp, s_p, w, betas)
    plain = red.forward_plain(s_pp, s_p, F.softmax(net.alpha_reduce, -1), betas)
    assert fused.shape == plain.shape == (2, 64, 5, 5) and torch.allclose(fused, plain, atol=1e-5)
    # with every op weight at 0 a node is the beta-weighted bypass only: shuffled, so 3 in 4 channels non-zero
    zero = red.forward_fused(s_pp, s_p, torch.zeros(14, 8), betas)
    node = zero[:, :16]
    nonzero = node.abs().sum((0, 2, 3)) > 0
    assert nonzero.tolist() == [False, True, True, True] * 4
    with pytest.raises(ConfigError, match="partial_k"):
        SP.build_supernet(10, (3, 16, 16), 6, 1, mode="pcdarts", partial_k=4)
    with pytest.raises(ConfigError, match="mode"):
        SP.build_supernet(10, (3, 16, 16), 8, 1, mode="enas")


# --------------------------------------------------------------------------------------------------
# evaluation network


def test_eval_network_with_auxiliary_and_drop_path_trains() -> None:
    torch.manual_seed(0)
    net = SP.build_network("DARTS_V2", 10, (3, 32, 32), 4, 1, layers=5, auxiliary=True)
    assert isinstance(net, DartsNetwork) and net.auxiliary_head is not None
    assert [i for i, c in enumerate(net.cells) if c.reduction] == [1, 3]
    net.drop_path_prob = 0.3
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    before = [p.detach().clone() for p in net.auxiliary_head.parameters()]
    losses = []
    for _ in range(3):
        logits, aux = net(x)
        assert logits.shape == aux.shape == (8, 10)
        loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, net.auxiliary_head.parameters()))
    net.eval()
    out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (8, 10)
    assert torch.equal(net(x), out)  # eval: no drop path, deterministic


def test_drop_path_skips_identity_ops_and_only_trains() -> None:
    net = SP.build_network("DARTS_V2", 10, (3, 16, 16), 4, 1)
    cell = net.cells[0]
    assert [m.__class__ is Identity for m in cell._ops] == [False, False, False, False, False, True, True, False]
    net.drop_path_prob = 0.999
    net.eval()
    x = torch.randn(4, 3, 16, 16)
    a = net(x)
    net.drop_path_prob = 0.0
    assert torch.equal(a, net(x))


def test_small_inputs_work_and_auxiliary_is_refused_when_too_small() -> None:
    net = SP.build_network("PC_DARTS", 10, (1, 8, 8), 4, 1)  # digits: 1x8x8
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert SP.build_network("GDAS_V1", 5, (3, 7, 9), 4, 1)(torch.randn(2, 3, 7, 9)).shape == (2, 5)
    with pytest.raises(ConfigError) as info:
        SP.build_network("DARTS_V2", 10, (3, 16, 16), 4, 1, auxiliary=True)
    assert info.value.field == "auxiliary" and "16x16" in str(info.value) and "29x29" in str(info.value)
    with pytest.raises(ConfigError, match="layers"):
        SP.build_network("DARTS_V2", 10, (3, 16, 16), 4, 1, layers=0)


def test_train_network_with_auxiliary_drop_path_cutout_and_augmentation() -> None:
    from nas_core.data import Dataset
    from nas_core.reporting import MemoryReporter
    from nas_core.train import train_network

    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, 32, 32, generator=g)
    y = torch.arange(48) % 3
    data = Dataset("tiny", x[:32], y[:32], x[32:40], y[32:40], x[40:], y[40:], 3)
    data.augment = True  # as nas_core.data sets it for image folders / CIFAR
    torch.manual_seed(0)
    net = SP.build_network("DARTS_V2", 3, (3, 32, 32), 4, 1, layers=5, auxiliary=True)
    rep = MemoryReporter()
    res = train_network(net, data, 2, rep, batch_size=16, drop_path=0.2, cutout=8, channels_last=False)
    assert 0.0 <= res["test_acc"] <= 1.0
    ramp = [m["drop_path_prob"] for _, _, m in rep.epochs]
    assert ramp == pytest.approx([0.0, 0.1])
    with pytest.raises(ConfigError, match="drop_path"):
        train_network(get_space("nb201").build_network("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                      3, (3, 8, 8), 2, 1), data, 1, rep, drop_path=0.2)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# augmentation


def test_augment_functions_are_deterministic_and_shape_preserving() -> None:
    x = torch.randn(16, 3, 10, 12)
    for fn in (lambda g: random_crop_flip(x, g), lambda g: cutout(x, g, 5)):
        a, b = fn(torch.Generator().manual_seed(3)), fn(torch.Generator().manual_seed(3))
        assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
        assert not torch.equal(a, fn(torch.Generator().manual_seed(4)))
    assert torch.equal(random_crop_flip(x, torch.Generator(), pad=0, flip=False), x)
    flipped = random_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    for i in range(len(x)):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    # every crop is a window of the zero-padded image
    crop = random_crop_flip(x, torch.Generator().manual_seed(1), pad=2, flip=False)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        assert any(torch.equal(crop[i], padded[i, :, dy : dy + 10, dx : dx + 12]) for dy in range(5) for dx in range(5))
    ones = torch.ones(64, 2, 16, 16)
    holes = cutout(ones, torch.Generator().manual_seed(0), 8)
    zeros = (holes == 0).all(1).sum((1, 2))
    assert zeros.max() == 64 and zeros.min() >= 16 and (holes[:, 0] == holes[:, 1]).all()  # clipped at borders
    assert torch.equal(cutout(ones, torch.Generator(), 0), ones) and torch.equal(x, x.clone())
    with pytest.raises(ValueError, match="N, C, H, W"):
        cutout(torch.ones(3, 4, 4), torch.Generator(), 2)


# --------------------------------------------------------------------------------------------------
# CLI, export, viz


def test_cli_profile_with_a_preset(capsys: pytest.CaptureFixture[str]) -> None:
    from nas_service.cli import main

    args = ["profile", "--space", "darts", "--genotype", "DARTS_V2", "--channels", "8", "--layers", "5",
            "--auxiliary", "--input", "3x32x32", "--classes", "10", "--json"]  # fmt: skip
    assert main(args) == 0
    out = _json_line(capsys.readouterr().out)
    net = SP.build_network("DARTS_V2", 10, (3, 32, 32), 8, 1, layers=5, auxiliary=True)
    assert out["params"] == count_params(net) < sum(p.numel() for p in net.parameters())
    assert out["layers"] == 5 and out["auxiliary"] is True and out["genotype"] == V2_TEXT
    assert out["macs"] > 0 and out["latency_ms"] > 0
    assert main(["profile", "--space", "nb201", "--genotype", "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|"
                 "none~2|", "--layers", "5"]) == 2  # fmt: skip
    assert "layers" in capsys.readouterr().err
    assert main(["profile", "--space", "darts", "--genotype", "DARTS_V2", "--auxiliary", "--input", "3x16x16"]) == 2
    assert "auxiliary" in capsys.readouterr().err
    assert main(["profile", "--space", "darts", "--genotype", "Genotype(normal=[('x', 0)])"]) == 2
    assert "--genotype" in capsys.readouterr().err


def test_cli_train_refuses_darts_options_for_nb201(capsys: pytest.CaptureFixture[str]) -> None:
    from nas_service.cli import main

    nb = "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    for extra, needle in ((["--cutout", "16"], "--cutout"), (["--drop-path", "0.2"], "--drop-path"),
                          (["--auxiliary"], "--auxiliary"), (["--layers", "8"], "--layers")):  # fmt: skip
        assert main(["train", "--space", "nb201", "--genotype", nb, "--dataset", "synthetic", *extra]) == 2
        assert needle in capsys.readouterr().err


def test_export_and_rebuild_a_darts_network(tmp_path) -> None:
    from nas_core.export import build_from_document, export_all, load_checkpoint

    torch.manual_seed(0)
    net = SP.build_network("GDAS_V1", 10, (3, 32, 32), 4, 1, layers=5, auxiliary=True)
    net.train()
    net(torch.randn(4, 3, 32, 32))  # move BN statistics off their defaults
    paths = export_all(net, "darts", "GDAS_V1", {}, (3, 32, 32), tmp_path, channels=4, cells_per_stage=1)
    doc = json.loads((tmp_path / "genotype.json").read_text())
    assert doc["network"]["layers"] == 5 and doc["network"]["auxiliary"] is True
    assert doc["genotype"] == SP.format("GDAS_V1")
    rebuilt = build_from_document(doc)
    assert rebuilt.layers == 5 and rebuilt.auxiliary_head is not None
    model, _ = load_checkpoint(paths["checkpoint"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), net.eval()(x), rtol=1e-4, atol=1e-4)
    ts = torch.jit.load(paths["torchscript"])
    with torch.no_grad():
        assert torch.allclose(ts(x), net(x), rtol=1e-4, atol=1e-4)


def test_node_top2_figure() -> None:
    import pandas as pd

    from nas_core import viz

    net = SP.build_supernet(10, (3, 8, 8), 4, 1)
    w = _weights({("2<-1", "sep_conv_3x3"): 0.6, ("2<-0", "none"): 0.9, ("2<-0", "sep_conv_3x3"): 0.05,
                  ("3<-2", "skip_connect"): 0.5, ("3<-0", "max_pool_3x3"): 0.4})  # fmt: skip
    rows = [(0, 0, *r) for r in SP.alpha_rows({"normal": w, "reduce": w})]
    rows += [(5, 1, *r) for r in SP.alpha_rows(net.arch_weights())]
    df = pd.DataFrame(rows, columns=["step", "epoch", "cell", "edge", "op", "weight"])
    fig = viz.node_top2(df, 0, "normal", SP)
    assert len(fig.data) == 4 and [a.text for a in fig.layout.annotations] == ["node 2", "node 3", "node 4", "node 5"]
    node2, node3 = fig.data[0], fig.data[1]
    assert list(node2.x) == ["2<-0", "2<-1"] and list(node2.text) == ["sep_conv_3x3", "sep_conv_3x3"]
    assert node2.y[0] == pytest.approx(0.05)  # none's 0.9 is not counted
    assert list(node3.customdata) == ["kept", "dropped", "kept"]
    assert "step 0" in fig.layout.title.text
    assert "step 5" in viz.node_top2(df, None, "reduce", SP).layout.title.text
    assert viz.node_top2(df.iloc[0:0], None, None, SP).layout.annotations  # empty-state figure
