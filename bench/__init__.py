"""Benchmarks: each is a module runnable as ``python -m bench.<name>`` that prints its figures
(``common``, ``loadgen`` and ``floor``, the floor under the service, are their parts)."""
