"""Benchmarks: each module is runnable (``python -m bench.<name>``) and prints its figures."""
