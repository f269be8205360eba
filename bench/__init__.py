"""Benchmarks (not tests): `python -m bench <name>`; each measures its own baseline in the same run."""
