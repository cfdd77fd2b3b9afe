"""Contract over the registries, timm-style: every registered space with every strategy it declares runs a real
(tiny) search and derives an architecture that the space's own parser reads back and builds.

A new space is one module and a registry line; this test is what tells its author which strategy it breaks.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from nas_core.config import ExperimentConfig
from nas_core.data import load_dataset
from nas_core.reporting import MemoryReporter
from nas_core.spaces import SPACES
from nas_core.strategies import STRATEGIES, SearchContext

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

#: one epoch on 8 images a class: a real search, as small as each strategy allows
TINY: dict[str, Any] = dict(
    dataset="synthetic", epochs=1, batch_size=16, channels=4, cells_per_stage=1, final_epochs=0, max_train_per_class=8
)
#: per strategy, the settings that keep one run to seconds (never turning off what the strategy does)
QUICK: dict[str, dict[str, Any]] = {
    "tenas": {"repeats": 1, "region_samples": 16},
    "random": {"trials": 2},
    "evolution": {"trials": 3, "population": 2, "sample_size": 1},
    "progressive": {"beam": 1, "first_stage": 2, "predictors": 1},
    "atomnas": {"finetune_epochs": 0},
    "pc-darts": {"warmup_epochs": 0},
}

PAIRS = [(space, strategy) for space, sp in SPACES.items() for strategy in sp.strategies]


def test_every_declared_strategy_is_registered_and_every_strategy_has_a_space() -> None:
    assert {s for _, s in PAIRS} == set(STRATEGIES)
    for name, strategy in STRATEGIES.items():
        assert strategy.spaces == tuple(sp for sp, s in PAIRS if s == name)


@pytest.mark.parametrize(("space_name", "strategy"), PAIRS, ids=[f"{sp}-{s}" for sp, s in PAIRS])
def test_space_and_strategy_search_and_derive_a_genotype_the_space_reads_back(
    space_name: str, strategy: str, tmp_path: Path
) -> None:
    space = SPACES[space_name]
    params = dict(QUICK.get(strategy, {}))
    if strategy == "fixed":  # no search: the architecture is given
        params["genotype"] = space.format(space.sample(random.Random(0), (3, 8, 8)))
    cfg = ExperimentConfig(strategy=strategy, space=space_name, **TINY, params=params).validated()
    data = load_dataset(cfg.dataset, cfg.seed, max_train_per_class=cfg.max_train_per_class)
    reporter = MemoryReporter(workdir=tmp_path)
    outcome = STRATEGIES[strategy].search(SearchContext(cfg, space, data, reporter))

    genotype = space.parse(outcome.genotype)
    assert space.format(genotype) == outcome.genotype  # canonical text round-trips
    assert space.format(space.from_json(space.to_json(genotype))) == outcome.genotype
    net = space.build_network(outcome.genotype, data.num_classes, data.input_shape, 4, 1)
    assert sum(p.numel() for p in net.parameters()) > 0
    assert reporter.progresses and reporter.progresses[-1][0] == pytest.approx(1.0)
