"""Persistence for NAS Dashboard: schema, migrations, and plain query functions (no PyTorch here)."""
