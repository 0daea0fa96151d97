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
from monitor.suite.trainer import Trainer


def not_applicable(probe: str, arm: str, description: str, reason: str) -> ArmResult:
    return ArmResult(
        probe=probe,
        arm=arm,
        description=description,
        applicable=False,
        reason=reason,
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
) -> ArmResult:
    """vLLM's logprobs of its own sampled tokens against the trainer's recompute of them;
    `contrast` names the mismatch of an arm whose two sides differ on purpose (not gated)."""
    reference, argmax, outside = [], [], 0
    for rollout in rollouts:
        scores = trainer.score(
            rollout.prompt_ids,
            rollout.token_ids,
            sampling.temperature,
            sampling.top_p,
            sampling.top_k,
        )
        reference.append(scores.logprobs(semantics))
        argmax.append(scores.argmax)
        outside += int((~scores.in_support).sum())
    columns = _columns(rollouts, reference)
    vllm_top = (
        None
        if any(r.top_ids is None for r in rollouts)
        else np.concatenate([r.top_ids for r in rollouts])
    )
    trainer_top = np.concatenate(argmax) if vllm_top is not None else None
    details = dict(extra or {})
    details["tokens_outside_trainer_support"] = outside
    return _arm(
        probe,
        arm,
        description,
        columns,
        f"trainer:{semantics}:{trainer.dtype}:{trainer.label}",
        sampling,
        engine_config,
        effective,
        details,
        vllm_top=vllm_top,
        reference_top=trainer_top,
        contrast=contrast,
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
) -> ArmResult:
    """Two vLLM runs over the same prompts and seeds: logprobs compared over each sequence's
    common prefix (after a divergence the contexts differ), token agreement over all of it."""
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
    agreement = metrics.agreement_metrics(
        np.asarray(tokens_a), np.asarray(tokens_b), np.asarray(seq_index), np.asarray(position)
    )
    columns = _columns(common_candidate, common_reference)
    return _arm(
        probe,
        arm,
        description,
        columns,
        f"vllm:{reference_label}",
        sampling,
        engine_config,
        effective,
        {**(extra or {}), **agreement},
    )


def _truncated(rollout: Rollout, length: int) -> Rollout:
    return Rollout(
        prompt_index=rollout.prompt_index,
        prompt_ids=rollout.prompt_ids,
        token_ids=rollout.token_ids[:length],
        logprobs=rollout.logprobs[:length],
        top_ids=None if rollout.top_ids is None else rollout.top_ids[:length],
        cached_tokens=rollout.cached_tokens,
    )


def _columns(rollouts: Sequence[Rollout], reference: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    def joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    return {
        "prompt_index": joined(
            [np.full(len(r.token_ids), r.prompt_index, dtype=np.int64) for r in rollouts], np.int64
        ),
        "position": joined([np.arange(len(r.token_ids)) for r in rollouts], np.int64),
        "token_id": joined([np.asarray(r.token_ids) for r in rollouts], np.int64),
        "vllm_logprob": joined([np.asarray(r.logprobs) for r in rollouts], np.float64),
        "reference_logprob": joined([np.asarray(x) for x in reference], np.float64),
    }


def _arm(
    probe: str,
    arm: str,
    description: str,
    columns: dict[str, np.ndarray],
    reference: str,
    sampling: SamplingSpec,
    engine_config: dict[str, Any],
    effective: EffectiveConfig | None,
    extra: dict[str, Any],
    vllm_top: np.ndarray | None = None,
    reference_top: np.ndarray | None = None,
    contrast: str | None = None,
) -> ArmResult:
    """The arm's metrics, strata and trace; a contrast arm (not gated) sizes a mismatch its two
    sides have on purpose. An arm that compared no token carries no metrics."""
    result = ArmResult(
        probe=probe,
        arm=arm,
        description=description,
        engine_config=engine_config,
        effective_config=effective,
        sampling=sampling,
        reference=reference,
        extra=extra,
        gated=contrast is None,
    )
    if contrast is not None:
        result.extra["contrast"] = contrast
    if columns["vllm_logprob"].size == 0:
        return result
    ref, got = columns["reference_logprob"], columns["vllm_logprob"]
    result.metrics = metrics.arm_metrics(
        ref,
        got,
        columns["prompt_index"],
        columns["position"],
        trainer_top=reference_top,
        vllm_top=vllm_top,
    )
    for name in (
        "token_agreement",
        "seq_diverged_fraction",
        "first_divergence_mean",
        "first_divergence_min",
    ):
        if name in extra:
            result.metrics[name] = float(extra.pop(name))
    result.by_probability = [Stratum.model_validate(s) for s in metrics.by_probability(ref, got)]
    result.by_position = [
        Stratum.model_validate(s) for s in metrics.by_position(ref, got, columns["position"])
    ]
    result.tokens = TokenTrace.of(metrics.TokenArrays(**columns))
    return result
