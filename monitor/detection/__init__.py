"""Regression detection: pure functions over plain inputs (monitor.detection.detect.RunInput),
called by monitor.judge after every run and on demand. Import the submodules directly."""
