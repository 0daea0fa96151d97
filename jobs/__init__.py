"""The scheduler and its workers: release discovery, the run queue, nightly repeat runs and the
dashboard's run requests, on one machine or a Ray cluster. Uses `monitor`; never imported by it."""
