"""Detection's plain inputs made from a result document, as `monitor.judge` makes them from a
stored run: shared by the detection tests and the detector benchmark."""

from __future__ import annotations

from monitor.detection.detect import ArmInput, RunInput
from monitor.schema import SuiteResult


def run_input(result: SuiteResult, release: str, run_id: str) -> RunInput:
    """The result's arms with their metrics and decoded token arrays, under the given release."""
    return RunInput(
        release=release,
        run_id=run_id,
        prompts_sha256=result.config.prompts_sha256,
        arms={
            (arm.probe, arm.arm): ArmInput(
                arm.applicable,
                arm.gated,
                arm.metrics,
                arm.tokens.arrays() if arm.tokens is not None else None,
                arm.reason,
            )
            for arm in result.arms()
        },
    )
