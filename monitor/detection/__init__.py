"""Regression detection: pure functions over stored results, run after every ingest and on demand.

Import the submodules directly. This package's `__init__` imports nothing on purpose: the suite
reads `gates` inside a release environment that has neither scipy nor ruptures.
"""
