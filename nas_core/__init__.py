"""NAS Dashboard engine: search spaces, strategies, data, metrics and export (no storage, no UI)."""

__version__ = "0.1.0"
