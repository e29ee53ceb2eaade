"""Benchmarks of kitaru's hot paths; run them with ``python -m benchmarks.run``."""
