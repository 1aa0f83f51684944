"""Benchmarks: Warden's own measurements (``bench_warden``) and its peers (``peers``).

Run everything with ``benchmarks/run`` (or ``python -m benchmarks.run_all`` inside the
benchmark venv). See ``benchmarks/README.md``.
"""
