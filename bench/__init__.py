"""Benchmarks: one command each, printing figures beside their floor and the ratios."""
