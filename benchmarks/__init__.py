"""Benchmarks: figures, never pass/fail (`nox -s bench`, or `python -m benchmarks.run`)."""
