"""Benchmarks for the hub: not tests, run by hand (``python -m benchmarks.<name> --help``).

``python -m benchmarks.all`` runs every benchmark and rewrites ``docs/benchmarks.md``.
"""
