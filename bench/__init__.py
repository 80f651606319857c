"""shopql benchmarks: `bench/run` (issue 8), `catalog.py`, `auth.py`."""
