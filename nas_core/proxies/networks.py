"""What the TE-NAS evaluator needs of one space's proxy networks: one object per space, registered in
:data:`nas_core.proxies.evaluator.PROXY_NETWORKS`, so the evaluator never asks which space it is on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ProxyNetworks:
    """How one space's proxies are built and called: the two nets, the two measures, the weight arguments."""

    #: (num_classes, in_ch) -> (NTK net, region net)
    build: Callable[[int, int], tuple[nn.Module, nn.Module]]
    ntk: Callable[..., float]
    ntk_reference: Callable[..., float]
    regions: Callable[..., int]
    #: one weight setting -> the nets' extra forward arguments (refusing a setting of the wrong shape)
    args: Callable[[Any], tuple[torch.Tensor, ...]]
    #: the genotypes of this space, and the weight setting of one (the supernet with every other op pruned)
    genotype_type: type
    genotype_weights: Callable[[Any], Any]
