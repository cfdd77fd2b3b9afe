"""TE-NAS (Chen, Gong & Wang, ICLR 2021): training-free search by pruning the supernet op by op.

Follows the reference (``VITA-Group/TENAS``, ``prune_tenas.py``; ../shared/ALGORITHMS.md section 5) on
the NB201 space: ``none`` is removed up front; each round scores every active op of every edge that
still has more than one by how removing it changes the NTK condition number (kappa, trainability) and
the number of linear regions (R, expressivity), ranks both, and prunes per edge the ops with the
smallest rank sum, until one op per edge is left. Nothing is trained.

One deliberate saving: within a round the full supernet's kappa and R per repeat are computed once
(same init, NTK batch and region inputs as its candidates), not once per candidate as the reference
does; the deltas are the same quantities. The initialisation is a parameter (see nas_core.proxies).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from nas_core.config import ParamSpec
from nas_core.proxies import ACTIVE_THRESHOLD, INITS, ProxyEvaluator
from nas_core.spaces.nb201 import EDGES, OPS, NB201Genotype
from nas_core.strategies.base import SearchContext, SearchOutcome, Strategy

PRUNED = -1000.0
#: the reference rounds each repeat's relative change before averaging
DELTA_DECIMALS = 3

Candidate = tuple[int, int]  # (edge index, op index)


def active_mask(alpha: torch.Tensor) -> torch.Tensor:
    """Active ops: softmax(alpha) > 0.01, as the reference's mixed op decides."""
    return F.softmax(alpha, dim=-1) > ACTIVE_THRESHOLD


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


def choose_prunes(
    d_kappa: dict[Candidate, float], d_regions: dict[Candidate, float], per_edge: dict[int, int]
) -> list[tuple[Candidate, int, int]]:
    """The reference's step 3-4: rank delta-kappa descending and delta-R ascending, sum the ranks, and per
    edge take the ``per_edge[edge]`` candidates with the smallest sums (ties: kappa order, stable).

    Returns ((edge, op), kappa rank, regions rank) for each op to prune.
    """
    rk = dense_ranks(d_kappa, descending=True)
    rr = dense_ranks(d_regions, descending=False)
    by_sum = sorted(rk, key=lambda c: rk[c] + rr[c])
    chosen: list[tuple[Candidate, int, int]] = []
    taken: dict[int, int] = {}
    for c in by_sum:
        e = c[0]
        if taken.get(e, 0) < per_edge.get(e, 0):
            taken[e] = taken.get(e, 0) + 1
            chosen.append((c, rk[c], rr[c]))
    return chosen


def planned_evaluations(active_per_edge: list[int], prune_per_round: int) -> int:
    """How many proxy evaluations (per repeat) the whole prune takes: for the progress bar."""
    counts = list(active_per_edge)
    total = 0
    while any(n > 1 for n in counts):
        total += 1 + sum(n for n in counts if n > 1)
        counts = [n - min(prune_per_round, n - 1) if n > 1 else n for n in counts]
    return total + 1  # the final architecture


class TENASStrategy(Strategy):
    """Training-free prune-by-importance search with the NTK condition number and linear regions."""

    name = "tenas"
    label = "TE-NAS (training-free)"
    description = (
        "Training-free: prunes the supernet op by op, ranking ops by how their removal changes the NTK "
        "condition number (trainability) and the number of linear regions (expressivity)."
    )
    spaces = ("nb201",)
    relative_cost = 0.3
    params = (
        ParamSpec("ntk_batch", 72, "int", "Batch size for the NTK (the reference uses 72 on NB201)", 2, 4096),
        ParamSpec("repeats", 3, "int", "Repeats (fresh init and NTK batch) averaged per candidate", 1, 100),
        ParamSpec(
            "region_samples", 1000, "int", "Samples per batch (3 batches) for counting linear regions", 1, 100_000
        ),
        ParamSpec("prune_per_round", 1, "int", "Ops pruned per edge per round (capped at active-1)", 1, 4),
        ParamSpec(
            "init",
            "kaiming",
            "choice",
            "Weight init of the proxy nets: 'kaiming' (the paper's intent) or 'pytorch-default' (what the "
            "reference effectively runs, because of its init-name quirk)",
            choices=INITS,
        ),
    )

    def search(self, ctx: SearchContext) -> SearchOutcome:
        cfg, p, data, rep = ctx.config, ctx.params, ctx.data, ctx.reporter
        repeats, per_round = int(p["repeats"]), int(p["prune_per_round"])
        ev = ProxyEvaluator(
            data.x_train,
            data.num_classes,
            ntk_batch=int(p["ntk_batch"]),
            region_samples=int(p["region_samples"]),
            init=str(p["init"]),
            seed=cfg.seed,
        )
        alpha = torch.zeros(len(EDGES), len(OPS))
        alpha[:, OPS.index("none")] = PRUNED
        total = planned_evaluations(active_mask(alpha).sum(1).tolist(), per_round) * repeats
        done = 0
        rep.log(
            f"{self.label}: NTK batch {min(ev.ntk_batch, len(data.x_train))}, {repeats} repeat(s), "
            f"{ev.region_samples} x {ev.region_batches} region samples, init {ev.init}, "
            f"prune {per_round} op(s) per edge per round"
        )

        def alpha_rows() -> list[tuple[str, str, str, float]]:
            act = active_mask(alpha).float()
            return ctx.space.alpha_rows({"normal": act / act.sum(1, keepdim=True)})

        def genotype() -> str:
            return ctx.space.format(NB201Genotype(tuple(OPS[i] for i in alpha.argmax(dim=-1).tolist())))

        def evaluate(weights: list[torch.Tensor], round_no: int) -> list[list[tuple[float, int]]]:
            """Per repeat, the proxies of each weight matrix; seeds depend on (seed, round, repeat) only."""
            nonlocal done
            out = []
            for r in range(repeats):
                out.append(ev.evaluate(weights, cfg.seed * 100_003 + round_no * 1009 + r, check=ctx.check_stop))
                done += len(weights)
                ctx.report_progress(done / total, round_no)
            return out

        rep.alphas(0, 0, alpha_rows())
        rep.genotype(0, 0, genotype())
        round_no = 0
        t_round = time.perf_counter()
        kappa_now = regions_now = float("nan")
        while True:
            ctx.check_stop()
            act = active_mask(alpha)
            edges_open = [e for e in range(len(EDGES)) if int(act[e].sum()) > 1]
            cands: list[Candidate] = [(e, o) for e in edges_open for o in range(len(OPS)) if bool(act[e, o])]
            weights = [F.softmax(alpha, dim=-1)]
            for e, o in cands:
                a = alpha.clone()
                a[e, o] = PRUNED
                weights.append(F.softmax(a, dim=-1))
            res = evaluate(weights, round_no)
            k_full = [res[r][0][0] for r in range(repeats)]
            r_full = [res[r][0][1] for r in range(repeats)]
            kappa_now, regions_now = sum(k_full) / repeats, sum(r_full) / repeats
            rep.series(
                round_no,
                round_no,
                {
                    "kappa": kappa_now,
                    "regions": regions_now,
                    "ops/active": float(act.sum()),
                    "ops/candidates": float(len(cands)),
                    "seconds/round": time.perf_counter() - t_round,
                },
            )
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
            per_edge = {e: min(per_round, int(act[e].sum()) - 1) for e in edges_open}
            for (e, o), k_rank, r_rank in choose_prunes(d_kappa, d_regions, per_edge):
                alpha[e, o] = PRUNED
                rep.event(
                    "prune",
                    round_no,
                    {
                        "round": round_no,
                        "edge": EDGES[e],
                        "op": OPS[o],
                        "d_kappa": d_kappa[(e, o)],
                        "d_regions": d_regions[(e, o)],
                        "kappa_rank": k_rank,
                        "regions_rank": r_rank,
                        "rank_sum": k_rank + r_rank,
                    },
                )
                rep.log(
                    f"round {round_no}: pruned {OPS[o]} on edge {EDGES[e]} (delta kappa {d_kappa[(e, o)]:+.3f}, "
                    f"delta regions {d_regions[(e, o)]:+.3f}; kappa rank {k_rank}, regions rank {r_rank}, "
                    f"sum {k_rank + r_rank})"
                )
            rep.alphas(round_no, round_no, alpha_rows())
            rep.genotype(round_no, round_no, genotype())
        ctx.report_progress(1.0, round_no)
        g = genotype()
        rep.log(
            f"{self.label}: derived {g} after {round_no} round(s); kappa {kappa_now:.4g}, regions {regions_now:.1f}"
        )
        extra: dict[str, Any] = {"kappa": kappa_now, "regions": regions_now, "rounds": round_no}
        # The pruned supernet is the derived cell: its proxies are the architecture's own, at these settings.
        settings = {**ev.settings(), "repeats": repeats}
        extra |= {"ntk_cond": kappa_now, "linear_regions": regions_now, "proxy_settings": settings}
        return SearchOutcome(genotype=g, accuracy=None, accuracy_kind="none", extra=extra)


TENAS = TENASStrategy()
