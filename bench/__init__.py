"""Benchmarks and measurement probes (not part of the test run)."""
