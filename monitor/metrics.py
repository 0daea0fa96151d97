"""Mismatch metrics between vLLM's reported token logprobs and a trainer's recomputed ones.

All functions are pure numpy. δ = trainer_logprob − vllm_logprob per sampled token and
ρ = exp(δ) is the trainer/inference importance ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

__all__ = [
    "MEAN_METRICS",
    "POSITION_BUCKET_EDGES",
    "PROB_BUCKET_EDGES",
    "TOKEN_TERMS",
    "TOPK_METRICS",
    "MetricsError",
    "TokenArrays",
    "TopkComparison",
    "agreement_metrics",
    "arm_metrics",
    "by_position",
    "by_probability",
    "first_divergence",
    "sample_positions",
    "sequence_metrics",
    "stratify",
    "support_violations",
    "token_metrics",
    "topk_comparison",
    "topk_metrics",
]

PROB_BUCKET_EDGES: tuple[float, ...] = (0.0, 1e-3, 1e-2, 1e-1, 0.5, 0.9, 1.0)
POSITION_BUCKET_EDGES: tuple[int, ...] = (0, 8, 16, 32, 64, 128, 256, 512)
CLIP_EPS = 0.2
"""PPO's clip range ε: ρ outside [1 − ε, 1 + ε]."""
TIS_C = 2.0
"""Truncated importance sampling's cap C: ρ > C."""
ICEPOP_BOUNDS = (0.5, 5.0)
"""IcePop's mask: ρ outside [0.5, 5]."""

HARNESS: tuple[str, str] = ("dtype_floor", "harness")
"""The (probe, arm) whose metrics are the harness's own resolution (the suite's trainer against
a float64 trainer on the same tokens): detection floors every series with them, never drifts
on them."""
REPLAY: tuple[str, str] = ("replay", "prefill")
"""The (probe, arm) that scores one fixed token corpus in every release: two runs of it are
compared token by token, so their tokens must be the same."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
TokenTerm = Callable[[FloatArray], FloatArray]


class MetricsError(ValueError):
    """Inputs the metrics cannot be computed from; the message is one line naming the problem."""


def floats(name: str, values: npt.ArrayLike, ndim: int = 1, shape: str = "") -> FloatArray:
    """A float64 array of `ndim` dimensions (described as `shape` in the error), or
    MetricsError naming what it is instead."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricsError(f"{name} is not numeric: {exc}") from None
    if arr.ndim != ndim:
        raise MetricsError(f"{name} must be {shape or f'{ndim}-D'}, got shape {arr.shape}")
    return arr


def finite_floats(name: str, values: npt.ArrayLike) -> FloatArray:
    """A validated non-empty 1-D float64 array of finite values."""
    arr = floats(name, values)
    if arr.size == 0:
        raise MetricsError(f"{name} is empty")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise MetricsError(f"{name} has {bad} non-finite value(s) (NaN or inf)")
    return arr


def integers(name: str, values: npt.ArrayLike) -> IntArray:
    """A validated non-empty 1-D int64 array; integral floats are accepted."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        arr = finite_floats(name, arr)
        if not np.array_equal(arr, np.round(arr)):
            raise MetricsError(f"{name} must hold integers, got fractional values")
        arr = arr.astype(np.int64)
    else:
        raise MetricsError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise MetricsError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise MetricsError(f"{name} is empty")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    """Raise when the named arrays differ in length."""
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise MetricsError(f"length mismatch: {shown}")


def _pair(trainer_logprob: npt.ArrayLike, vllm_logprob: npt.ArrayLike) -> tuple[FloatArray, ...]:
    """Validated (trainer, vllm, δ) arrays."""
    trainer = finite_floats("trainer_logprob", trainer_logprob)
    vllm = finite_floats("vllm_logprob", vllm_logprob)
    _same_length(trainer_logprob=trainer, vllm_logprob=vllm)
    return trainer, vllm, trainer - vllm


def _check_eps(clip_eps: float) -> None:
    if not 0.0 < clip_eps < 1.0:
        raise MetricsError(f"clip_eps must lie in (0, 1), got {clip_eps}")


def _outside_clip(log_ratio: FloatArray, clip_eps: float) -> npt.NDArray[np.bool_]:
    """Where exp(log_ratio) lies outside [1 − ε, 1 + ε], decided in log space to avoid overflow."""
    return (log_ratio < math.log1p(-clip_eps)) | (log_ratio > math.log1p(clip_eps))


def _k3_terms(delta: FloatArray) -> FloatArray:
    """Per-token ρ − 1 − δ, accurate for tiny δ: expm1(δ) rounds to the float nearest a value
    above δ, so the term is never negative without any clamp."""
    with np.errstate(over="ignore"):
        return np.expm1(delta) - delta


def _exp_abs(delta: FloatArray) -> FloatArray:
    with np.errstate(over="ignore"):
        return np.exp(np.abs(delta))


def token_terms(
    *,
    clip_eps: float = CLIP_EPS,
    tis_c: float = TIS_C,
    icepop_low: float = ICEPOP_BOUNDS[0],
    icepop_high: float = ICEPOP_BOUNDS[1],
) -> dict[str, TokenTerm]:
    """The per-token term of every metric that is a mean over tokens (ratio tests in log space,
    so a huge δ never overflows)."""
    _check_eps(clip_eps)
    if not 0.0 < icepop_low < icepop_high:
        raise MetricsError(
            f"icepop bounds must satisfy 0 < low < high, got [{icepop_low}, {icepop_high}]"
        )
    if not tis_c > 0.0:
        raise MetricsError(f"tis_c must be positive, got {tis_c}")
    low, high, cap = math.log(icepop_low), math.log(icepop_high), math.log(tis_c)
    return {
        "mean_abs_delta": np.abs,
        "mean_delta": lambda delta: delta,
        "k1": np.negative,
        "k2": lambda delta: delta * delta / 2.0,
        "k3": _k3_terms,
        "token_mult_prob_error": _exp_abs,
        "clip_fraction": lambda delta: _outside_clip(delta, clip_eps).astype(np.float64),
        "tis_fraction": lambda delta: (delta > cap).astype(np.float64),
        "icepop_fraction": lambda delta: ((delta < low) | (delta > high)).astype(np.float64),
    }


TOKEN_TERMS: dict[str, TokenTerm] = token_terms()
"""Per-token terms at the field's thresholds; a metric's value is the mean of its term."""
MEAN_METRICS: tuple[str, ...] = tuple(TOKEN_TERMS)


RHO_ZERO_METRICS: tuple[str, ...] = ("clip_fraction", "tis_fraction", "icepop_fraction")
"""The mask rates a token the trainer gives no probability (ρ = 0) counts in."""


def support_violations(delta: npt.ArrayLike, outside: npt.ArrayLike) -> dict[str, float]:
    """Mask rates with the `outside` tokens at ρ = 0 (sampled outside the trainer's kept
    support: an RL trainer's ratio is 0 there), and the fraction of such tokens."""
    d = finite_floats("delta", delta)
    zero = np.asarray(outside, dtype=bool)
    _same_length(delta=d, outside=zero)
    with np.errstate(divide="ignore"):
        counted = np.where(zero, -np.inf, d)
    return {
        **{name: float(np.mean(TOKEN_TERMS[name](counted))) for name in RHO_ZERO_METRICS},
        "outside_support_fraction": float(zero.mean()),
    }


def _pearson(x: FloatArray, y: FloatArray) -> float:
    """Pearson correlation that is 1.0 for equal constants and 0.0 when only one side varies."""
    xc = x - x.mean()
    yc = y - y.mean()
    sxx = float(np.dot(xc, xc))
    syy = float(np.dot(yc, yc))
    if sxx == 0.0 or syy == 0.0:
        return 1.0 if sxx == syy == 0.0 and np.array_equal(x, y) else 0.0
    return float(np.clip(np.dot(xc, yc) / math.sqrt(sxx * syy), -1.0, 1.0))


def token_metrics(
    trainer_logprob: npt.ArrayLike,
    vllm_logprob: npt.ArrayLike,
    *,
    clip_eps: float = CLIP_EPS,
    tis_c: float = TIS_C,
    icepop_low: float = ICEPOP_BOUNDS[0],
    icepop_high: float = ICEPOP_BOUNDS[1],
) -> dict[str, float]:
    """Per-token mismatch statistics: |δ| spread, KL estimators k1–k3, ratio stats, mask rates."""
    terms = token_terms(
        clip_eps=clip_eps, tis_c=tis_c, icepop_low=icepop_low, icepop_high=icepop_high
    )
    trainer, vllm, delta = _pair(trainer_logprob, vllm_logprob)
    abs_delta = np.abs(delta)
    with np.errstate(over="ignore", invalid="ignore"):
        ratio = np.exp(delta)
        chi2 = float(np.mean(np.expm1(2.0 * delta)))
        weights = np.exp(delta - delta.max())
        ess = float(weights.sum() ** 2 / (delta.size * np.dot(weights, weights)))
        means = {name: float(np.mean(term(delta))) for name, term in terms.items()}
        return {
            "n_tokens": float(delta.size),
            **means,
            "p50_abs_delta": float(np.percentile(abs_delta, 50)),
            "p99_abs_delta": float(np.percentile(abs_delta, 99)),
            "max_abs_delta": float(abs_delta.max()),
            "ratio_mean": float(ratio.mean()),
            "ratio_std": float(ratio.std()),
            "ratio_min": float(ratio.min()),
            "ratio_max": float(ratio.max()),
            "ratio_p1": float(np.percentile(ratio, 1)),
            "ratio_p99": float(np.percentile(ratio, 99)),
            "chi2": chi2,
            "ess": min(ess, 1.0),
            "prob_pearson": _pearson(np.exp(trainer), np.exp(vllm)),
        }


def sequence_metrics(
    delta: npt.ArrayLike, seq_index: npt.ArrayLike, *, clip_eps: float = CLIP_EPS
) -> dict[str, float]:
    """Statistics of the per-sequence log-ratio Σδ, which is what sequence-level IS corrects."""
    _check_eps(clip_eps)
    d = finite_floats("delta", delta)
    seq = integers("seq_index", seq_index)
    _same_length(delta=d, seq_index=seq)
    _, inverse = np.unique(seq, return_inverse=True)
    sums = np.bincount(inverse.ravel(), weights=d).astype(np.float64)
    abs_sums = np.abs(sums)
    return {
        "n_sequences": float(sums.size),
        "seq_logratio_mean": float(sums.mean()),
        "seq_logratio_std": float(sums.std()),
        "seq_logratio_abs_mean": float(abs_sums.mean()),
        "seq_logratio_abs_max": float(abs_sums.max()),
        "seq_logratio_p99_abs": float(np.percentile(abs_sums, 99)),
        "seq_ratio_clip_fraction": float(np.mean(_outside_clip(sums, clip_eps))),
    }


def agreement_metrics(
    tokens_a: npt.ArrayLike,
    tokens_b: npt.ArrayLike,
    seq_index: npt.ArrayLike,
    position: npt.ArrayLike,
) -> dict[str, float]:
    """How often two token choices at the same positions agree, and where sequences first part."""
    a = integers("tokens_a", tokens_a)
    b = integers("tokens_b", tokens_b)
    seq = integers("seq_index", seq_index)
    pos = integers("position", position)
    _same_length(tokens_a=a, tokens_b=b, seq_index=seq, position=pos)
    _, inverse = np.unique(seq, return_inverse=True)
    inverse = inverse.ravel()
    n_seq = int(inverse.max()) + 1
    mismatch = a != b
    sentinel = np.iinfo(np.int64).max
    first = np.full(n_seq, sentinel, dtype=np.int64)
    np.minimum.at(first, inverse[mismatch], pos[mismatch])
    diverged = first[first != sentinel]
    return {
        "token_agreement": float(1.0 - mismatch.mean()),
        "seq_diverged_fraction": diverged.size / n_seq,
        "first_divergence_mean": float(diverged.mean()) if diverged.size else -1.0,
        "first_divergence_min": float(diverged.min()) if diverged.size else -1.0,
    }


def first_divergence(tokens_a: Sequence[int], tokens_b: Sequence[int]) -> int | None:
    """Index of the first differing token; the shorter length if one is a prefix; None if equal."""
    n = min(len(tokens_a), len(tokens_b))
    a = np.asarray(tokens_a[:n], dtype=np.int64)
    b = np.asarray(tokens_b[:n], dtype=np.int64)
    differ = np.flatnonzero(a != b)
    if differ.size:
        return int(differ[0])
    return None if len(tokens_a) == len(tokens_b) else n


def _fmt(edge: float) -> str:
    return f"{edge:g}"


def stratify(
    trainer_logprob: npt.ArrayLike,
    vllm_logprob: npt.ArrayLike,
    keys: npt.ArrayLike,
    edges: Sequence[float],
    labels: Sequence[str] | None = None,
    *,
    open_ended: bool = False,
    clip_eps: float = CLIP_EPS,
) -> list[dict[str, float | str]]:
    """Mismatch metrics per bucket of `keys`, one dict per non-empty bucket.

    Buckets are [e_i, e_i+1); the last is closed at edges[-1], or with `open_ended` an extra
    bucket "e+" holds every key ≥ edges[-1] and reports hi as the largest key it holds.
    """
    _check_eps(clip_eps)
    _, _, delta = _pair(trainer_logprob, vllm_logprob)
    k = finite_floats("keys", keys)
    _same_length(trainer_logprob=delta, keys=k)
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < (1 if open_ended else 2):
        raise MetricsError(f"edges must be a 1-D sequence of at least {1 if open_ended else 2}")
    if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise MetricsError(f"edges must be finite and strictly increasing, got {tuple(edges)}")
    n_buckets = e.size if open_ended else e.size - 1
    if labels is not None and len(labels) != n_buckets:
        raise MetricsError(f"labels has {len(labels)} entries for {n_buckets} buckets")

    below = k < e[0]
    above = np.zeros_like(below) if open_ended else k > e[-1]
    outside = int(np.count_nonzero(below | above))
    if outside:
        span = f"[{_fmt(e[0])}, inf)" if open_ended else f"[{_fmt(e[0])}, {_fmt(e[-1])}]"
        raise MetricsError(f"keys has {outside} values outside {span}")

    bucket = np.searchsorted(e, k, side="right") - 1
    if not open_ended:
        bucket = np.minimum(bucket, n_buckets - 1)

    terms = token_terms(clip_eps=clip_eps)
    per_token = {
        name: terms[name](delta)
        for name in ("mean_abs_delta", "k1", "k3", "token_mult_prob_error", "clip_fraction")
    }
    rows: list[dict[str, float | str]] = []
    for i in range(n_buckets):
        members = bucket == i
        n = int(np.count_nonzero(members))
        if n == 0:
            continue
        lo = float(e[i])
        if i + 1 < e.size:
            hi = float(e[i + 1])
            closer = "]" if i == n_buckets - 1 else ")"
            label = f"[{_fmt(lo)}, {_fmt(hi)}{closer}"
        else:
            hi = float(k[members].max())
            label = f"{_fmt(lo)}+"
        rows.append(
            {
                "bucket": labels[i] if labels is not None else label,
                "lo": lo,
                "hi": hi,
                "n_tokens": n,
                "fraction": n / delta.size,
                **{name: float(values[members].mean()) for name, values in per_token.items()},
            }
        )
    return rows


def by_probability(
    trainer_logprob: npt.ArrayLike, vllm_logprob: npt.ArrayLike
) -> list[dict[str, float | str]]:
    """Stratify by vLLM's probability of the sampled token, where low-probability tokens diverge."""
    vllm = finite_floats("vllm_logprob", vllm_logprob)
    probs = np.minimum(np.exp(vllm), 1.0)
    return stratify(trainer_logprob, vllm, probs, PROB_BUCKET_EDGES)


def by_position(
    trainer_logprob: npt.ArrayLike, vllm_logprob: npt.ArrayLike, position: npt.ArrayLike
) -> list[dict[str, float | str]]:
    """Stratify by position in the completion, with a final open bucket "512+"."""
    pos = integers("position", position)
    return stratify(trainer_logprob, vllm_logprob, pos, POSITION_BUCKET_EDGES, open_ended=True)


def arm_metrics(
    trainer_logprob: npt.ArrayLike,
    vllm_logprob: npt.ArrayLike,
    seq_index: npt.ArrayLike,
    position: npt.ArrayLike,
    *,
    trainer_top: npt.ArrayLike | None = None,
    vllm_top: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """One arm's scalar metrics: token, sequence and, given both top-token arrays, how often
    the two top-1 choices agree (the scored tokens are the same, so nothing diverges)."""
    trainer, vllm, delta = _pair(trainer_logprob, vllm_logprob)
    seq = integers("seq_index", seq_index)
    pos = integers("position", position)
    _same_length(trainer_logprob=trainer, seq_index=seq, position=pos)
    if (trainer_top is None) != (vllm_top is None):
        given = "trainer_top" if trainer_top is not None else "vllm_top"
        raise MetricsError(f"{given} given without the other top-token array")
    out = token_metrics(trainer, vllm)
    out.update(sequence_metrics(delta, seq))
    if trainer_top is not None and vllm_top is not None:
        out["token_agreement"] = agreement_metrics(trainer_top, vllm_top, seq, pos)[
            "token_agreement"
        ]
    return out


@dataclass(frozen=True)
class TokenArrays:
    """One arm's per-token arrays: which prompt, position and token each compared token is,
    vLLM's logprob of it and the reference's (the trainer, or a second vLLM run in a pair arm);
    δ = reference − vLLM, as everywhere here."""

    prompt_index: IntArray
    position: IntArray
    token_id: IntArray
    vllm_logprob: FloatArray
    reference_logprob: FloatArray

    @classmethod
    def checked(
        cls,
        prompt_index: npt.ArrayLike,
        position: npt.ArrayLike,
        token_id: npt.ArrayLike,
        vllm_logprob: npt.ArrayLike,
        reference_logprob: npt.ArrayLike,
        label: str = "trace",
    ) -> TokenArrays:
        """Validated arrays: equally long, non-empty, integral ids, finite logprobs."""
        arrays = cls(
            prompt_index=integers(f"{label} prompt_index", prompt_index),
            position=integers(f"{label} position", position),
            token_id=integers(f"{label} token_id", token_id),
            vllm_logprob=finite_floats(f"{label} vllm_logprob", vllm_logprob),
            reference_logprob=finite_floats(f"{label} reference_logprob", reference_logprob),
        )
        lengths = {name: len(getattr(arrays, name)) for name in cls.__dataclass_fields__}
        if len(set(lengths.values())) != 1:
            shown = ", ".join(f"{name}={n}" for name, n in lengths.items())
            raise MetricsError(f"{label} arrays differ in length: {shown}")
        return arrays

    def check(self, label: str = "trace") -> TokenArrays:
        return TokenArrays.checked(
            self.prompt_index,
            self.position,
            self.token_id,
            self.vllm_logprob,
            self.reference_logprob,
            label=label,
        )

    @property
    def n_tokens(self) -> int:
        return int(self.prompt_index.size)

    @property
    def delta(self) -> FloatArray:
        return self.reference_logprob - self.vllm_logprob

    @cached_property
    def groups(self) -> tuple[IntArray, IntArray, IntArray]:
        """(sorted prompt ids, each token's position among them, tokens per prompt)."""
        prompts, inverse, counts = np.unique(
            self.prompt_index, return_inverse=True, return_counts=True
        )
        return prompts.astype(np.int64), inverse.ravel().astype(np.int64), counts


TOPK_METRICS: tuple[str, ...] = ("topk_kl", "topk_tv", "topk_overlap")
"""Beyond the sampled token: vLLM's top-k logprobs against the trainer's whole distribution at
sampled positions (`topk_comparison`). Not gated by default (monitor/gates.py)."""


@dataclass(frozen=True)
class TopkComparison:
    """One position: KL(vLLM‖trainer) and total variation over the shared support, each side
    renormalised over it, and the share of vLLM's top-k that is also the trainer's top-k."""

    kl: float
    tv: float
    overlap: float
    shared: int


def sample_positions(lengths: Sequence[int], stride: int, cap: int) -> list[tuple[int, int]]:
    """Deterministic (sequence, position) pairs: every `stride`-th position of each sequence
    from position 0, sequences in order, at most `cap` pairs."""
    if stride < 1 or cap < 0:
        raise MetricsError(f"stride must be >= 1 and cap >= 0, got {stride} and {cap}")
    chosen = [(seq, pos) for seq, n in enumerate(lengths) for pos in range(0, n, stride)]
    return chosen[:cap]


def topk_comparison(
    vllm_ids: npt.ArrayLike, vllm_logprobs: npt.ArrayLike, trainer_logprobs: npt.ArrayLike
) -> TopkComparison | None:
    """Compare vLLM's top-k at one position (token ids and their logprobs) with the trainer's
    log-distribution over the whole vocabulary there (`trainer_logprobs[token id]`).

    The shared support S is vLLM's top-k ids whose logprob is finite on both sides (a processed
    distribution is -inf outside its top-k/top-p support). Both sides are renormalised over S
    (p_S = p / p(S), q_S = q / q(S); a constant shift per side, e.g. logits instead of
    logprobs, cancels), then KL = Σ_S p_S log(p_S / q_S) with p = vLLM (the sampling policy,
    as the k1/k3 mismatch estimators), TV = ½ Σ_S |p_S − q_S|. Overlap = |V ∩ T| / |V| with V
    vLLM's finite top ids and T the trainer's |V| most likely ids of finite logprob. None when S
    is empty."""
    ids = integers("vllm_ids", vllm_ids)
    got = floats("vllm_logprobs", vllm_logprobs)
    row = floats("trainer_logprobs", trainer_logprobs)
    _same_length(vllm_ids=ids, vllm_logprobs=got)
    if ids.size and (ids.min() < 0 or ids.max() >= row.size):
        raise MetricsError(f"vllm_ids outside the trainer's vocabulary of {row.size}")
    if np.isnan(got).any() or np.isnan(row).any():
        raise MetricsError("top-k logprobs hold NaN")
    ref = row[ids]
    shared = np.isfinite(got) & np.isfinite(ref)
    if not shared.any():
        return None
    p_log = got[shared] - _logsumexp(got[shared])
    q_log = ref[shared] - _logsumexp(ref[shared])
    p, q = np.exp(p_log), np.exp(q_log)
    kl = float(max(0.0, np.sum(p * (p_log - q_log))))
    tv = float(0.5 * np.sum(np.abs(p - q)))
    top_v = ids[np.isfinite(got)]
    size = int(top_v.size)
    top_t = np.argsort(-row, kind="stable")[:size]
    top_t = top_t[np.isfinite(row[top_t])]
    overlap = len(set(top_v.tolist()) & set(top_t.tolist())) / size
    return TopkComparison(kl=kl, tv=tv, overlap=float(overlap), shared=int(shared.sum()))


def topk_metrics(comparisons: Sequence[TopkComparison | None]) -> dict[str, float]:
    """Means of the per-position comparisons (positions without a shared support are left out);
    empty when none has one."""
    kept = [c for c in comparisons if c is not None]
    if not kept:
        return {}
    return {
        "topk_kl": float(np.mean([c.kl for c in kept])),
        "topk_tv": float(np.mean([c.tv for c in kept])),
        "topk_overlap": float(np.mean([c.overlap for c in kept])),
    }


def _logsumexp(values: FloatArray) -> float:
    top = float(values.max())
    return top + math.log(float(np.sum(np.exp(values - top))))
