"""Speed, memory and search-efficiency benchmarks; run each from the repository root as a
module, e.g. ``python -m benchmarks.throughput --help``. Results go to ``benchmarks/results/``."""
