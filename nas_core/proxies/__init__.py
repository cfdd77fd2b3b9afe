"""TE-NAS's training-free proxies (Chen et al., ICLR 2021): the NTK's condition number and linear regions.

- :mod:`~nas_core.proxies.measures`: the space-independent measures and the proxy nets' initialisation;
- :mod:`~nas_core.proxies.nb201`, :mod:`~nas_core.proxies.darts`: each space's proxy networks, as the
  reference code (``VITA-Group/TENAS``) builds them, described by a :class:`~nas_core.proxies.networks.ProxyNetworks`;
- :mod:`~nas_core.proxies.evaluator`: the registry of proxy networks per space, the evaluator and
  :func:`genotype_proxies`; :mod:`~nas_core.proxies.pool`: its process pool;
- :mod:`~nas_core.proxies.ntk_conv`, :mod:`~nas_core.proxies.cpu_kernels`: the NTK net's convolutions and
  their native CPU kernels.
"""

from nas_core.proxies.evaluator import PROXY_NETWORKS, PROXY_SPACES, ProxyEvaluator, genotype_proxies, proxy_networks
from nas_core.proxies.measures import (
    ACTIVE_THRESHOLD,
    INITS,
    NAN_KAPPA,
    activation_patterns,
    batched_ntk_rows,
    count_distinct_rows,
    count_regions_reference,
    init_proxy,
    kappa,
    linear_regions,
    ntk_condition_number,
    ntk_condition_number_reference,
    per_sample_ntk_rows,
    region_inputs,
)
from nas_core.proxies.nb201 import NTKNet, ProxyCell, RegionNet, genotype_weights
from nas_core.proxies.networks import ProxyNetworks

__all__ = [
    "ACTIVE_THRESHOLD",
    "INITS",
    "NAN_KAPPA",
    "NTKNet",
    "PROXY_NETWORKS",
    "PROXY_SPACES",
    "ProxyCell",
    "ProxyEvaluator",
    "ProxyNetworks",
    "RegionNet",
    "activation_patterns",
    "batched_ntk_rows",
    "count_distinct_rows",
    "count_regions_reference",
    "genotype_proxies",
    "genotype_weights",
    "init_proxy",
    "kappa",
    "linear_regions",
    "ntk_condition_number",
    "ntk_condition_number_reference",
    "per_sample_ntk_rows",
    "proxy_networks",
    "region_inputs",
]
