"""Benchmarks (plain Python, run from the ``artsim bench ...`` command line)."""
