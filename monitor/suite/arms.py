"""Turn rollouts and their references into `ArmResult`s: metrics, strata and token traces (the
monitor judges them). Two kinds: vLLM against the trainer recompute, and vLLM against another
vLLM run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from monitor import metrics
from monitor.schema import ArmResult, EffectiveConfig, SamplingSpec, Stratum, TokenTrace
from monitor.suite.engine import Rollout
from monitor.suite.trainer import TokenScores, Trainer


def not_applicable(probe: str, arm: str, description: str, reason: str) -> ArmResult:
    return ArmResult(
        probe=probe,
        arm=arm,
        description=description,
        applicable=False,
        reason=reason,
    )


def failed_arm(
    probe: str, arm: str, description: str, reason: str, extra: dict[str, Any] | None = None
) -> ArmResult:
    """A gated arm that should have run and could not: applicable, nothing compared and the
    reason as an unmet claim, so the monitor judges it *fail (not measured)*, never a pass."""
    result = ArmResult(
        probe=probe,
        arm=arm,
        description=description,
        applicable=True,
        extra=dict(extra or {}),
        metrics={"nonfinite_tokens": 0.0, "uncompared_fraction": 1.0},
    )
    return with_unmet(result, [reason])


def topk_arm_metrics(
    rollouts: Sequence[Rollout],
    trainer: Trainer,
    semantics: str,
    sampling: SamplingSpec,
    stride: int,
    cap: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """vLLM's top-k at every `stride`-th generated position (at most `cap`) against the
    trainer's whole distribution there under `semantics`: the means of
    `metrics.topk_comparison` and what was compared (positions, k)."""
    with_top = [r for r in rollouts if r.top is not None]
    chosen = metrics.sample_positions([len(r.token_ids) for r in with_top], stride, cap)
    by_sequence: dict[int, list[int]] = {}
    for seq, pos in chosen:
        by_sequence.setdefault(seq, []).append(pos)
    requests = [
        (with_top[seq].prompt_ids, with_top[seq].token_ids, positions)
        for seq, positions in by_sequence.items()
    ]
    distributions = trainer.distributions_many(
        requests, sampling.temperature, sampling.top_p, sampling.top_k, semantics
    )
    comparisons = []
    k = 0
    for seq, rows in zip(by_sequence, distributions, strict=True):
        top = with_top[seq].top
        assert top is not None
        for row, pos in zip(rows, by_sequence[seq], strict=True):
            ids, values = top[pos]
            k = max(k, int(np.isfinite(values).sum()))
            comparisons.append(metrics.topk_comparison(ids, values, row))
    compared = sum(c is not None for c in comparisons)
    return metrics.topk_metrics(comparisons), {
        "topk_positions": compared,
        "topk_k": k,
        "topk_semantics": semantics,
        "topk_stride": stride,
    }


def score_rollouts(
    trainer: Trainer, rollouts: Sequence[Rollout], sampling: SamplingSpec
) -> list[TokenScores]:
    """The trainer's scores of each rollout's tokens under `sampling`."""
    return trainer.score_many(
        [(r.prompt_ids, r.token_ids) for r in rollouts],
        sampling.temperature,
        sampling.top_p,
        sampling.top_k,
    )


def trainer_arm(
    probe: str,
    arm: str,
    description: str,
    rollouts: Sequence[Rollout],
    trainer: Trainer,
    semantics: str,
    sampling: SamplingSpec,
    engine_config: dict[str, Any],
    effective: EffectiveConfig | None,
    extra: dict[str, Any] | None = None,
    contrast: str | None = None,
    unmet: Sequence[str] = (),
) -> ArmResult:
    """vLLM's logprobs of its own sampled tokens against the trainer's recompute of them;
    `contrast` names the mismatch of an arm whose two sides differ on purpose (not gated).
    Under processed semantics a token outside the trainer's kept support counts at ρ = 0."""
    scores = score_rollouts(trainer, rollouts, sampling)
    columns = _columns(rollouts, [s.logprobs(semantics) for s in scores])
    if rollouts and all(r.top_ids is not None for r in rollouts):
        columns["vllm_top"] = _joined([r.top_ids for r in rollouts], np.int64)
        columns["reference_top"] = _joined([s.argmax for s in scores], np.int64)
    in_support = _joined([s.in_support for s in scores], np.bool_)
    if semantics == "processed":
        columns["in_support"] = in_support
    details = dict(extra or {})
    details["tokens_outside_trainer_support"] = int((~in_support).sum())
    return _arm(
        ArmResult(
            probe=probe,
            arm=arm,
            description=description,
            engine_config=engine_config,
            effective_config=effective,
            sampling=sampling,
            reference=f"trainer:{semantics}:{trainer.dtype}:{trainer.label}",
            extra=details,
            gated=contrast is None,
        ),
        columns,
        expected_tokens(rollouts, sampling),
        contrast,
        unmet,
    )


def pair_arm(
    probe: str,
    arm: str,
    description: str,
    candidate: Sequence[Rollout],
    reference: Sequence[Rollout],
    reference_label: str,
    sampling: SamplingSpec,
    engine_config: dict[str, Any],
    effective: EffectiveConfig | None,
    extra: dict[str, Any] | None = None,
    unmet: Sequence[str] = (),
) -> ArmResult:
    """Two vLLM runs over the same prompts and seeds: logprobs compared over each sequence's
    common prefix (after a divergence the contexts differ), token agreement over all of it;
    what the prefixes leave out counts as uncompared."""
    by_prompt = {r.prompt_index: r for r in reference}
    common_candidate, common_reference = [], []
    tokens_a: list[int] = []
    tokens_b: list[int] = []
    seq_index: list[int] = []
    position: list[int] = []
    for rollout in candidate:
        other = by_prompt[rollout.prompt_index]
        length = min(len(rollout.token_ids), len(other.token_ids))
        divergence = metrics.first_divergence(rollout.token_ids, other.token_ids)
        common = length if divergence is None else min(divergence, length)
        common_candidate.append(_truncated(rollout, common))
        common_reference.append(other.logprobs[:common])
        tokens_a.extend(rollout.token_ids[:length])
        tokens_b.extend(other.token_ids[:length])
        seq_index.extend([rollout.prompt_index] * length)
        position.extend(range(length))
    details = dict(extra or {})
    if tokens_a:
        details.update(
            metrics.agreement_metrics(
                np.asarray(tokens_a),
                np.asarray(tokens_b),
                np.asarray(seq_index),
                np.asarray(position),
            )
        )
    return _arm(
        ArmResult(
            probe=probe,
            arm=arm,
            description=description,
            engine_config=engine_config,
            effective_config=effective,
            sampling=sampling,
            reference=f"vllm:{reference_label}",
            extra=details,
        ),
        _columns(common_candidate, common_reference),
        expected_tokens(candidate, sampling),
        None,
        unmet,
    )


def expected_tokens(rollouts: Sequence[Rollout], sampling: SamplingSpec) -> int:
    """How many tokens an arm should compare: every requested token when EOS is ignored (a
    shorter output is a loss), else what was generated."""
    if sampling.ignore_eos:
        return len(rollouts) * sampling.max_tokens
    return sum(len(r.token_ids) for r in rollouts)


def _truncated(rollout: Rollout, length: int) -> Rollout:
    return Rollout(
        prompt_index=rollout.prompt_index,
        prompt_ids=rollout.prompt_ids,
        token_ids=rollout.token_ids[:length],
        logprobs=rollout.logprobs[:length],
        top_ids=None if rollout.top_ids is None else rollout.top_ids[:length],
        cached_tokens=rollout.cached_tokens,
    )


def _joined(parts: Sequence[Any], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if len(parts) else np.zeros(0, dtype=dtype)


def _columns(rollouts: Sequence[Rollout], reference: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-token arrays of the arm, one row per generated token (TokenArrays' fields)."""
    return {
        "prompt_index": _joined(
            [np.full(len(r.token_ids), r.prompt_index, dtype=np.int64) for r in rollouts], np.int64
        ),
        "position": _joined([np.arange(len(r.token_ids)) for r in rollouts], np.int64),
        "token_id": _joined([np.asarray(r.token_ids) for r in rollouts], np.int64),
        "vllm_logprob": _joined([np.asarray(r.logprobs) for r in rollouts], np.float64),
        "reference_logprob": _joined([np.asarray(x) for x in reference], np.float64),
    }


AGREEMENT = (
    "token_agreement",
    "seq_diverged_fraction",
    "first_divergence_mean",
    "first_divergence_min",
)
TRACE = ("prompt_index", "position", "token_id", "vllm_logprob", "reference_logprob")


def _arm(
    result: ArmResult,
    columns: dict[str, np.ndarray],
    expected: int,
    contrast: str | None,
    unmet: Sequence[str],
) -> ArmResult:
    """Fill in the arm's metrics, strata and trace from its finite tokens only; count the
    non-finite ones, the tokens left uncompared against `expected` and the claims its
    read-backs contradicted (`unmet`, which also become its reason)."""
    if contrast is not None:
        result.extra["contrast"] = contrast
    finite = np.isfinite(columns["vllm_logprob"]) & np.isfinite(columns["reference_logprob"])
    kept = {name: values[finite] for name, values in columns.items()}
    compared = int(finite.sum())
    counts = {
        "nonfinite_tokens": float((~finite).sum()),
        "uncompared_fraction": max(0.0, 1.0 - compared / expected) if expected else 1.0,
    }
    with_unmet(result, unmet)
    for name in AGREEMENT:
        if name in result.extra:
            counts[name] = float(result.extra.pop(name))
    if compared == 0:
        result.metrics.update(counts)
        return result
    ref, got = kept["reference_logprob"], kept["vllm_logprob"]
    result.metrics = metrics.arm_metrics(
        ref,
        got,
        kept["prompt_index"],
        kept["position"],
        trainer_top=kept.get("reference_top"),
        vllm_top=kept.get("vllm_top"),
    )
    if "in_support" in kept:
        result.metrics.update(metrics.support_violations(ref - got, ~kept["in_support"]))
    result.metrics.update(counts)
    with_unmet(result, unmet)
    result.by_probability = [Stratum.model_validate(s) for s in metrics.by_probability(ref, got)]
    result.by_position = [
        Stratum.model_validate(s) for s in metrics.by_position(ref, got, kept["position"])
    ]
    result.tokens = TokenTrace.of(metrics.TokenArrays(**{name: kept[name] for name in TRACE}))
    return result


def with_unmet(result: ArmResult, unmet: Sequence[str]) -> ArmResult:
    """Record the claims an applicable arm's read-backs contradict: their count is gated
    ("not measured" when above 0) and their text is the arm's reason."""
    result.metrics["unmet_claims"] = float(len(unmet))
    result.reason = "; ".join(unmet) or None
    return result
