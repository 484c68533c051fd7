"""Conjure's benchmark harness (issue 6): `python -m bench --help`. Not part of the test run."""
