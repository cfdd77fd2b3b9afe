"""NAS Dashboard engine: search spaces, strategies, data, metrics and export (no storage, no UI)."""

import os

# Before torch loads OpenMP: let idle OpenMP threads sleep instead of spinning. With the default policy a
# 2-thread job on a 2-core machine slowed several-fold whenever another process (the dashboard, a second job)
# wanted a core. Set the variable yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
