"""The trainer's logprob semantics and kept support, computed by hand: run by
tests/test_suite_units.py with a release environment's python (torch lives there).

    python tests/release_env/trainer_checks.py
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from monitor.suite.trainer import _support, _whole_support, distribution_rows, score_logits

LOGITS = [2.0, 1.0, 0.0, -1.0]


def log_softmax(values: list[float]) -> np.ndarray:
    shifted = np.asarray(values, dtype=np.float64)
    return shifted - math.log(np.exp(shifted).sum())


def scored(targets: list[int], temperature: float, top_p: float, top_k: int):  # type: ignore[no-untyped-def]
    logits = torch.tensor([LOGITS] * len(targets), dtype=torch.float32)
    return score_logits(logits, torch.tensor(targets), temperature, top_p, top_k)


def check_raw_and_temperature_semantics() -> None:
    scores = scored([0, 1, 2, 3], 0.5, 1.0, -1)
    np.testing.assert_allclose(scores.raw, log_softmax(LOGITS), rtol=1e-12)
    np.testing.assert_allclose(scores.temperature, log_softmax([2 * x for x in LOGITS]), rtol=1e-12)
    np.testing.assert_allclose(scores.processed, scores.temperature, rtol=1e-12)
    assert scores.in_support.all() and (scores.argmax == 0).all()


def check_top_k_renormalises_over_the_kept_tokens() -> None:
    scores = scored([0, 1, 2], 1.0, 1.0, 2)
    kept = log_softmax(LOGITS[:2])
    np.testing.assert_allclose(scores.processed[:2], kept, rtol=1e-12)
    assert scores.in_support.tolist() == [True, True, False]


def check_top_p_keeps_the_smallest_head_reaching_p() -> None:
    # probabilities 0.644, 0.237, 0.087, 0.032: the head reaching 0.85 is the first two
    scores = scored([0, 1, 2, 3], 1.0, 0.85, -1)
    assert scores.in_support.tolist() == [True, True, False, False]
    np.testing.assert_allclose(scores.processed[:2], log_softmax(LOGITS[:2]), rtol=1e-12)


def check_top_p_applies_after_top_k() -> None:
    # After top-k=2 the kept pair is 0.731 / 0.269, so top-p=0.72 keeps token 0 alone; top-p
    # over the full distribution would have kept token 1 too.
    scores = scored([0, 1], 1.0, 0.72, 2)
    assert scores.in_support.tolist() == [True, False]
    assert scores.processed[0] == 0.0


def check_whole_distributions_agree_with_the_scored_tokens() -> None:
    """distribution_rows (the top-k comparison's trainer side) gives, at every vocabulary id,
    what score_logits gives that id as a target; processed is -inf outside the support."""
    logits = torch.tensor([LOGITS], dtype=torch.float32)
    for semantics in ("raw", "temperature", "processed"):
        rows = distribution_rows(logits, 0.7, 0.72, 2, semantics)
        assert rows.shape == (1, 4)
        for target in range(4):
            one = score_logits(logits, torch.tensor([target]), 0.7, 0.72, 2)
            if semantics == "processed" and not one.in_support[0]:
                assert rows[0, target] == -math.inf
            else:
                np.testing.assert_allclose(rows[0, target], one.logprobs(semantics)[0], rtol=1e-12)
    processed = distribution_rows(logits, 1.0, 1.0, 2, "processed")[0]
    np.testing.assert_allclose(np.exp(processed[:2]).sum(), 1.0, rtol=1e-12)


def check_support_from_the_top_k_candidates_is_the_whole_vocabulary_support() -> None:
    """Under top-k the support and its mass come from the k candidates alone: the same kept ids
    and (within float64 rounding) the same mass as masking the whole vocabulary; ties at the
    k-th value (all of them kept) take the whole-vocabulary path."""
    generator = torch.Generator().manual_seed(3)
    rows = {
        "spread": torch.randn(16, 4096, generator=generator, dtype=torch.float64) * 3,
        "peaked": torch.randn(16, 4096, generator=generator, dtype=torch.float64) * 12,
        "tied": torch.randint(-3, 3, (16, 512), generator=generator).double(),
    }
    for name, logits in rows.items():
        logprobs = torch.log_softmax(logits, dim=-1)
        for top_p, top_k in ((0.9, 50), (1.0, 50), (0.5, 5), (0.3, 1), (0.95, 20)):
            keep, mass = _support(logprobs, top_p, top_k)
            whole, expected = _whole_support(logprobs, top_p, top_k)
            assert torch.equal(keep, whole), (name, top_p, top_k)
            np.testing.assert_allclose(mass.numpy(), expected.numpy(), rtol=0, atol=1e-14)


CHECKS = {
    name[len("check_") :]: check
    for name, check in sorted(globals().items())
    if name.startswith("check_") and callable(check)
}

if __name__ == "__main__":
    failed = []
    for name, check in CHECKS.items():
        try:
            check()
        except AssertionError as exc:
            failed.append(f"{name}: {exc}")
    print("\n".join(failed) or f"{len(CHECKS)} checks passed")
    sys.exit(1 if failed else 0)
