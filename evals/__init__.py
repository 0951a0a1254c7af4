"""Benchmarks: build probes, run them through a backend, summarise (one module per benchmark)."""
