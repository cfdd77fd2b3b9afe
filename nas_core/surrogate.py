"""Accuracy predictor of progressive search: an ensemble of small LSTM regressors over architecture tokens.

PNAS (Liu et al., ECCV 2018) and DPP-Net (Dong et al., ECCV 2018) score the candidates of the next, larger cell
size with a recurrent regressor trained on the smaller cells trained so far; a recurrent net reads cells of any
length, which is what lets it rank cells one node larger than any it has seen. As PNAS, several regressors are
averaged: each starts from its own initialisation and (with five or more examples) learns from its own random
four fifths of them, which makes the ensemble's mean steadier than one small net fitted to a few dozen points.
Each reads one token per decided edge (its op), takes the last hidden state, and maps it through a sigmoid to an
accuracy in [0, 1]; L1 loss, Adam, full batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


class _Regressor(nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """(n, L) tokens of one length -> (n,) accuracy."""
        _, (h, _) = self.lstm(self.embed(seqs))
        return torch.sigmoid(self.head(h[-1])).squeeze(-1)


def _by_length(seqs: Sequence[Sequence[int]]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        if not s:
            raise ValueError("an architecture needs at least one token")
        groups.setdefault(len(s), []).append(i)
    return groups


@dataclass
class LSTMEnsemble:
    """Fit on (token sequence, accuracy) pairs of any lengths; predict the accuracy of new sequences."""

    vocab: int
    members: int = 5
    embed: int = 16
    hidden: int = 32
    steps: int = 150
    lr: float = 0.01
    seed: int = 0
    _nets: list[_Regressor] = field(default_factory=list, init=False, repr=False)

    def fit(self, seqs: Sequence[Sequence[int]], targets: Sequence[float]) -> LSTMEnsemble:
        """Train every member afresh on the examples (deterministic for a given seed and data)."""
        if len(seqs) != len(targets) or not seqs:
            raise ValueError("fit needs as many targets as sequences, and at least one of each")
        if any(t < 0 or t > 1 for t in targets):
            raise ValueError("targets are accuracies in [0, 1]")
        y = torch.tensor(list(targets), dtype=torch.float32)
        self._nets = []
        with torch.random.fork_rng():
            for m in range(self.members):
                torch.manual_seed(self.seed * 7919 + m)
                rng = random.Random(self.seed * 7919 + m)
                rows = list(range(len(seqs)))
                if len(rows) >= 5 and self.members > 1:
                    rows = sorted(rng.sample(rows, max(4, round(0.8 * len(rows)))))
                sub = [seqs[i] for i in rows]
                groups = [
                    (torch.tensor([sub[i] for i in g]), y[[rows[i] for i in g]]) for g in _by_length(sub).values()
                ]
                net = _Regressor(self.vocab, self.embed, self.hidden)
                opt = torch.optim.Adam(net.parameters(), lr=self.lr)
                for _ in range(self.steps):
                    opt.zero_grad()
                    loss = sum((net(x) - t).abs().sum() for x, t in groups) / len(rows)
                    loss.backward()  # type: ignore[union-attr]
                    opt.step()
                self._nets.append(net.eval())
        return self

    @torch.no_grad()
    def predict(self, seqs: Sequence[Sequence[int]]) -> list[float]:
        """The members' mean predicted accuracy per sequence."""
        if not self._nets:
            raise RuntimeError("fit the predictor before predicting")
        out = [0.0] * len(seqs)
        for idx in _by_length(seqs).values():
            x = torch.tensor([seqs[i] for i in idx])
            mean = torch.stack([net(x) for net in self._nets]).mean(0)
            for i, v in zip(idx, mean.tolist()):
                out[i] = float(v)
        return out
