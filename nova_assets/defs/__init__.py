"""One package per capability; each exposes `defs` (a dg.Definitions) merged in definitions.py."""
