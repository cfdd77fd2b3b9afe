"""TE-NAS (Chen, Gong & Wang, ICLR 2021): training-free search by pruning the supernet op by op.

Follows the reference (``VITA-Group/TENAS``, ``prune_tenas.py``; ../shared/ALGORITHMS.md section 5):
``none`` is removed up front; each round scores every active op of every edge (of every cell type) that
still has more than one by how removing it changes the NTK condition number (kappa, trainability) and
the number of linear regions (R, expressivity), ranks both over all candidates, and prunes per edge the
ops with the smallest rank sum, until one op per edge is left. Nothing is trained.

On the DARTS space (normal and reduction cells, ``prune_func_rank_group``) an edge-pruning stage follows:
for each cell type and each node's incoming-edge group (edges [0:2], [2:5], [5:9], [9:14]) with more
than 2 edges, the removal of each edge (its one remaining op) is scored and ranked the same way within
the group, and all but the 2 edges with the largest rank sums are removed; groups are done one after
the other (normal cell first), each seeing the edges the previous ones removed. The result has 2
inputs per node, a valid DARTS genotype. Each group is one recorded step, like a pruning round.

Defaults that depend on the space (parameter value 0): the NTK batch (72 on NB201, 14 on DARTS, the
reference's CIFAR-10 settings) and the ops pruned per edge per round (1 on NB201, 3 on DARTS/CIFAR-10).

Deliberate differences: within a round the current supernet's kappa and R per repeat are computed once
(same init, NTK batch and region inputs as its candidates), not once per candidate as the reference
does; the deltas are the same quantities. In the edge stage the reference's NTK baseline network keeps
the alphas from the start of the stage (a stale copy once a group has been pruned) while its region
baseline is rebuilt from the current alphas; here both baselines are the current supernet. The
initialisation is a parameter (see nas_core.proxies).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from nas_core.errors import ConfigError
from nas_core.params import ParamSpec
from nas_core.proxies import ACTIVE_THRESHOLD, INITS, ProxyEvaluator
from nas_core.proxies.darts import PRUNED_ALPHA, masked_softmax
from nas_core.spaces.darts import derive_cell
from nas_core.spaces.darts_genotype import DEFAULT_CONCAT, DartsGenotype
from nas_core.spaces.nb201_arch import NB201Genotype
from nas_core.strategies.base import SearchContext, SearchOutcome, Strategy

if TYPE_CHECKING:
    from nas_core.config import ExperimentConfig

PRUNED = PRUNED_ALPHA
#: the reference rounds each repeat's relative change before averaging
DELTA_DECIMALS = 3
# Ops pruned per edge per round when the parameter is 0, and the incoming-edge groups the edge stage prunes to
# EDGES_PER_NODE edges, are the space's: SearchSpace.tenas_prune_per_round and .tenas_edge_groups.
EDGES_PER_NODE = 2

Candidate = tuple[Any, int]  # (edge key, op index); the search's edge keys are (cell index, edge index)


def active_mask(alpha: torch.Tensor) -> torch.Tensor:
    """Active ops: softmax(alpha) > 0.01, as the reference's mixed op decides; a removed edge has none."""
    return masked_softmax(alpha) > ACTIVE_THRESHOLD


def dense_ranks(values: dict[Candidate, float], descending: bool) -> dict[Candidate, int]:
    """Dense ranks from 0 (ties share a rank), in sorted order; the dict keeps that order."""
    order = sorted(values, key=lambda c: values[c], reverse=descending)
    ranks: dict[Candidate, int] = {}
    prev: float | None = None
    rank = -1
    for c in order:
        if prev is None or values[c] != prev:
            rank += 1
        ranks[c] = rank
        prev = values[c]
    return ranks


def _ranked(d_kappa: dict[Candidate, float], d_regions: dict[Candidate, float]):
    rk = dense_ranks(d_kappa, descending=True)
    rr = dense_ranks(d_regions, descending=False)
    return sorted(rk, key=lambda c: rk[c] + rr[c]), rk, rr


def choose_prunes(
    d_kappa: dict[Candidate, float], d_regions: dict[Candidate, float], per_edge: dict[Any, int]
) -> list[tuple[Candidate, int, int]]:
    """The reference's step 3-4: rank delta-kappa descending and delta-R ascending, sum the ranks, and per
    edge take the ``per_edge[edge]`` candidates with the smallest sums (ties: kappa order, stable).

    Returns ((edge, op), kappa rank, regions rank) for each op to prune.
    """
    by_sum, rk, rr = _ranked(d_kappa, d_regions)
    chosen: list[tuple[Candidate, int, int]] = []
    taken: dict[Any, int] = {}
    for c in by_sum:
        e = c[0]
        if taken.get(e, 0) < per_edge.get(e, 0):
            taken[e] = taken.get(e, 0) + 1
            chosen.append((c, rk[c], rr[c]))
    return chosen


def choose_edges(
    d_kappa: dict[Candidate, float], d_regions: dict[Candidate, float], keep: int = EDGES_PER_NODE
) -> list[tuple[Candidate, int, int]]:
    """The reference's edge stage for one group: rank as :func:`choose_prunes` and remove every candidate
    but the ``keep`` with the largest rank sums (the last ``keep`` of the stable ascending order)."""
    by_sum, rk, rr = _ranked(d_kappa, d_regions)
    return [(c, rk[c], rr[c]) for c in by_sum[: max(0, len(by_sum) - keep)]]


def planned_evaluations(
    active_per_edge: list[int], prune_per_round: int, edge_groups: Sequence[int] = (), keep: int = EDGES_PER_NODE
) -> int:
    """How many proxy evaluations (per repeat) the whole prune takes: for the progress bar.

    ``edge_groups``: the size of each incoming-edge group the edge stage prunes to ``keep`` edges.
    """
    counts = list(active_per_edge)
    total = 0
    while any(n > 1 for n in counts):
        total += 1 + sum(n for n in counts if n > 1)
        counts = [n - min(prune_per_round, n - 1) if n > 1 else n for n in counts]
    total += sum(1 + n for n in edge_groups if n > keep)
    return total + 1  # the final architecture


class TENASStrategy(Strategy):
    """Training-free prune-by-importance search with the NTK condition number and linear regions."""

    name = "tenas"
    label = "TE-NAS (training-free)"
    derives_from_weights = False  # it prunes by proxies; its op weights are only the pruning mask
    description = (
        "Training-free: prunes the supernet op by op, ranking ops by how their removal changes the NTK "
        "condition number (trainability) and the number of linear regions (expressivity); on DARTS cells "
        "it then prunes each node's inputs to 2 edges the same way."
    )
    relative_cost = 0.3
    params = (
        ParamSpec(
            "ntk_batch",
            0,
            "int",
            "Batch size for the NTK; 0 = the reference's for the space (72 on NB201, 14 on DARTS)",
            0,
            4096,
        ),
        ParamSpec("repeats", 3, "int", "Repeats (fresh init and NTK batch) averaged per candidate", 1, 100),
        ParamSpec(
            "region_samples", 1000, "int", "Samples per batch (3 batches) for counting linear regions", 1, 100_000
        ),
        ParamSpec(
            "prune_per_round",
            0,
            "int",
            "Ops pruned per edge per round (capped at active-1); 0 = the reference's for the space (1 on NB201, "
            "3 on DARTS)",
            0,
            7,
        ),
        ParamSpec(
            "init",
            "kaiming",
            "choice",
            "Weight init of the proxy nets: 'kaiming' (the paper's intent) or 'pytorch-default' (what the "
            "reference effectively runs, because of its init-name quirk)",
            choices=INITS,
        ),
        ParamSpec(
            "workers",
            1,
            "int",
            "Processes scoring candidates at once, one thread each (1 = in this process). The proxy nets are "
            "tiny: on 2 cores, 2 workers scored 1.05-1.2x faster than 2 threads in one process",
            1,
            64,
        ),
    )

    def validate(self, config: ExperimentConfig) -> None:
        if int(config.params.get("ntk_batch", 0)) == 1:
            raise ConfigError(
                "params.ntk_batch", "must be 0 (the reference's batch for the space) or at least 2 (got 1)"
            )

    def search(self, ctx: SearchContext) -> SearchOutcome:
        cfg, p, data, space = ctx.config, ctx.params, ctx.data, ctx.space
        if space.tenas_ntk_batch is None:  # the space has no proxy networks
            raise ConfigError("space", f"{self.label} runs on {', '.join(self.spaces)}, not {space.name!r}")
        repeats = int(p["repeats"])
        per_round = int(p["prune_per_round"]) or space.tenas_prune_per_round
        ev = ProxyEvaluator(
            data.x_train,
            data.num_classes,
            ntk_batch=int(p["ntk_batch"]) or None,  # 0: the evaluator's reference batch for the space
            region_samples=int(p["region_samples"]),
            init=str(p["init"]),
            seed=cfg.seed,
            space=space.name,
            workers=int(p["workers"]),
            device=str(ctx.device),
        )
        try:
            return self._prune(ctx, ev, repeats, per_round)
        finally:
            ev.close()

    def _prune(self, ctx: SearchContext, ev: ProxyEvaluator, repeats: int, per_round: int) -> SearchOutcome:
        cfg, rep, space = ctx.config, ctx.reporter, ctx.space
        cells = tuple(space.cell_types)
        multi = len(cells) > 1
        groups = space.tenas_edge_groups
        n_edges, n_ops = len(space.edges), len(space.ops)
        none = space.ops.index("none")
        alpha = {ct: torch.zeros(n_edges, n_ops) for ct in cells}
        for a in alpha.values():
            a[:, none] = PRUNED
        n_active = [int(v) for ct in cells for v in active_mask(alpha[ct]).sum(1).tolist()]
        total = planned_evaluations(n_active, per_round, [hi - lo for _ in cells for lo, hi in groups]) * repeats
        done = 0
        rep.log(
            f"{self.label} on {space.label}: NTK batch {ev.settings()['ntk_batch']}, {repeats} repeat(s), "
            f"{ev.region_samples} x {ev.region_batches} region samples, init {ev.init}, "
            f"prune {per_round} op(s) per edge per round"
            + (f", {ev.workers} worker processes" if ev.workers > 1 else "")
            + (f", then each node's inputs down to {EDGES_PER_NODE} edges" if groups else "")
        )

        def setting(a: dict[str, torch.Tensor]) -> Any:
            """What the evaluator scores: the op weights of every cell type (one matrix on NB201)."""
            w = {ct: masked_softmax(a[ct]) for ct in cells}
            return w if multi else w[cells[0]]

        def alpha_rows() -> list[tuple[str, str, str, float]]:
            out = {}
            for ct in cells:
                act = active_mask(alpha[ct]).float()
                out[ct] = act / act.sum(1, keepdim=True).clamp(min=1.0)
            return space.alpha_rows(out)

        def genotype() -> str:
            if not multi:
                return space.format(NB201Genotype(tuple(space.ops[i] for i in alpha[cells[0]].argmax(dim=-1).tolist())))
            w = {ct: active_mask(alpha[ct]).float() for ct in cells}
            n, r = derive_cell(w["normal"], "darts"), derive_cell(w["reduce"], "darts")
            return space.format(DartsGenotype(tuple(n), DEFAULT_CONCAT, tuple(r), DEFAULT_CONCAT))

        def evaluate(weights: list[Any], round_no: int) -> list[list[tuple[float, int]]]:
            """Per repeat, the proxies of each weight setting; seeds depend on (seed, round, repeat) only."""

            def one_done() -> None:
                nonlocal done
                done += 1
                ctx.report_progress(done / total, round_no)

            seeds = [cfg.seed * 100_003 + round_no * 1009 + r for r in range(repeats)]
            return ev.evaluate_repeats(weights, seeds, check=ctx.check_stop, done=one_done)

        def next_step() -> tuple[str, list[Candidate]]:
            """The next round's candidates: ops of edges with > 1 active op, else one edge group's edges."""
            act = {ct: active_mask(alpha[ct]) for ct in cells}
            cands = [
                ((ci, e), o)
                for ci, ct in enumerate(cells)
                for e in range(n_edges)
                if int(act[ct][e].sum()) > 1
                for o in range(n_ops)
                if bool(act[ct][e, o])
            ]
            if cands:
                return "ops", cands
            for ci, ct in enumerate(cells):
                for lo, hi in groups:
                    live = [e for e in range(lo, hi) if bool(act[ct][e].any())]
                    if len(live) > EDGES_PER_NODE:
                        return "edges", [((ci, e), int(act[ct][e].nonzero()[0])) for e in live]
            return "done", []

        rep.alphas(0, 0, alpha_rows())
        rep.genotype(0, 0, genotype())
        round_no = edge_rounds = 0
        t_round = time.perf_counter()
        kappa_now = regions_now = float("nan")
        while True:
            ctx.check_stop()
            stage, cands = next_step()
            weights = [setting(alpha)]
            for (ci, e), o in cands:
                ct = cells[ci]
                a = {c: v.clone() for c, v in alpha.items()}
                if stage == "ops":
                    a[ct][e, o] = PRUNED
                else:
                    a[ct][e, :] = PRUNED  # the edge's last op: the whole edge goes
                weights.append(setting(a))
            res = evaluate(weights, round_no)
            k_full = [res[r][0][0] for r in range(repeats)]
            r_full = [res[r][0][1] for r in range(repeats)]
            kappa_now, regions_now = sum(k_full) / repeats, sum(r_full) / repeats
            act_all = [active_mask(alpha[ct]) for ct in cells]
            points = {
                "kappa": kappa_now,
                "regions": regions_now,
                "ops/active": float(sum(int(a.sum()) for a in act_all)),
                "ops/candidates": float(len(cands)),
                "seconds/round": time.perf_counter() - t_round,
            }
            if groups:
                points["edges/active"] = float(sum(int(a.any(dim=1).sum()) for a in act_all))
            rep.series(round_no, round_no, points)
            if not cands:
                break
            round_no += 1
            t_round = time.perf_counter()
            d_kappa: dict[Candidate, float] = {}
            d_regions: dict[Candidate, float] = {}
            for i, c in enumerate(cands, start=1):
                dk = [round((k_full[r] - res[r][i][0]) / k_full[r], DELTA_DECIMALS) for r in range(repeats)]
                dr = [round((r_full[r] - res[r][i][1]) / r_full[r], DELTA_DECIMALS) for r in range(repeats)]
                d_kappa[c], d_regions[c] = sum(dk) / repeats, sum(dr) / repeats
            if stage == "ops":
                ops_open = Counter(key for key, _ in cands)  # active ops per open edge
                per_edge = {key: min(per_round, n - 1) for key, n in ops_open.items()}
                chosen = choose_prunes(d_kappa, d_regions, per_edge)
            else:
                edge_rounds += 1
                chosen = choose_edges(d_kappa, d_regions)
            for (key, o), k_rank, r_rank in chosen:
                ct, e = cells[key[0]], key[1]
                if stage == "ops":
                    alpha[ct][e, o] = PRUNED
                else:
                    alpha[ct][e, :] = PRUNED
                self._report(rep, stage, round_no, ct, space.edges[e], space.ops[o], multi, d_kappa[(key, o)],
                             d_regions[(key, o)], k_rank, r_rank)  # fmt: skip
            rep.alphas(round_no, round_no, alpha_rows())
            rep.genotype(round_no, round_no, genotype())
        ctx.report_progress(1.0, round_no)
        g = genotype()
        space.parse(g)  # the derived cell must be a valid architecture of the space
        rep.log(
            f"{self.label}: derived {g} after {round_no} round(s); kappa {kappa_now:.4g}, regions {regions_now:.1f}"
        )
        extra: dict[str, Any] = {"kappa": kappa_now, "regions": regions_now, "rounds": round_no}
        if groups:
            extra["edge_rounds"] = edge_rounds
        # The pruned supernet is the derived cell: its proxies are the architecture's own, at these settings.
        settings = {**ev.settings(), "repeats": repeats}
        extra |= {"ntk_cond": kappa_now, "linear_regions": regions_now, "proxy_settings": settings}
        return SearchOutcome(genotype=g, accuracy=None, accuracy_kind="none", extra=extra)

    @staticmethod
    def _report(
        rep: Any,
        stage: str,
        round_no: int,
        cell: str,
        edge: str,
        op: str,
        multi: bool,
        d_kappa: float,
        d_regions: float,
        k_rank: int,
        r_rank: int,
    ) -> None:
        """One pruning decision as an event (the Monitor's table) and a log line."""
        rep.event(
            "prune",
            round_no,
            {
                "round": round_no,
                "stage": stage,
                "cell": cell,
                "edge": edge,
                "op": op,
                "d_kappa": d_kappa,
                "d_regions": d_regions,
                "kappa_rank": k_rank,
                "regions_rank": r_rank,
                "rank_sum": k_rank + r_rank,
            },
        )
        why = (
            f"(delta kappa {d_kappa:+.3f}, delta regions {d_regions:+.3f}; kappa rank {k_rank}, "
            f"regions rank {r_rank}, sum {k_rank + r_rank})"
        )
        if stage == "edges":
            rep.log(f"round {round_no}: removed edge {edge} ({op}) of the {cell} cell {why}")
        else:
            where = f"{cell} edge" if multi else "edge"
            rep.log(f"round {round_no}: pruned {op} on {where} {edge} {why}")


TENAS = TENASStrategy()
