"""Pieces the benchmarks share (not benchmarks themselves: `nova bench` runs only bench/*.py)."""
