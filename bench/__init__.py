"""pocketrun's benchmarks: ``python -m bench.engine`` and ``python -m bench.api``."""
