"""Benchmarks run by `make bench`; figures go to bench-results/ and docs/benchmarks.md."""
