"""The replay arm compares two releases on the very same tokens: a numerical change shows as
drift there, a change of corpus is said instead of being compared, and the shipped corpora are
what the suite replays."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from monitor import metrics
from monitor.detection.detect import (
    ArmInput,
    DetectionPolicy,
    RunInput,
    drift_tests,
    evaluate_release,
    same_tokens,
)
from monitor.metrics import REPLAY, TokenArrays
from monitor.suite.replay import (
    PROMPTS,
    SHIPPED,
    TOKENS,
    ReplayCorpus,
    corpus_path,
    load_corpus,
    replay_corpus,
)

N_PROMPTS, N_TOKENS = 16, 32
PROMPTS_SHA = "a" * 64


def replay_run(
    release: str,
    run_id: str,
    *,
    seed: int,
    shift: float = 0.0,
    corpus: int = 0,
    moved: int = 0,
) -> RunInput:
    """A run whose replay arm scored corpus `corpus` (its token ids) with fresh noise from
    `seed`, the trainer's side moved by `shift` nats on every token and by 0.5 nats more on
    `moved` tokens."""
    tokens = np.random.default_rng(corpus)
    vllm = -tokens.exponential(1.0, N_PROMPTS * N_TOKENS)
    token_id = tokens.integers(0, 1000, vllm.size)
    noise = np.random.default_rng(seed).normal(0.0, 1e-6, vllm.size)
    reference = vllm + shift + noise
    reference[np.random.default_rng(seed).choice(vllm.size, moved, replace=False)] += 0.5
    prompt_index = np.repeat(np.arange(N_PROMPTS), N_TOKENS)
    position = np.tile(np.arange(N_TOKENS), N_PROMPTS)
    trace = TokenArrays(prompt_index, position, token_id, vllm, reference)
    values = metrics.arm_metrics(reference, vllm, prompt_index, position)
    return RunInput(release, run_id, PROMPTS_SHA, {REPLAY: ArmInput(True, True, values, trace)})


BASELINE = replay_run("0.31.0", "run-1", seed=1)
REPEATS = [replay_run("0.31.0", f"repeat-{i}", seed=10 + i) for i in range(3)]
POLICY = DetectionPolicy()


def replay_findings_of(candidate: RunInput) -> list[tuple[str, str]]:
    found = evaluate_release(candidate, BASELINE, repeats=REPEATS, policy=POLICY)
    return [(f.kind, f.metric) for f in found if (f.probe, f.arm) == REPLAY]


def test_a_shift_on_the_same_tokens_is_drift() -> None:
    found = replay_findings_of(replay_run("0.32.0", "run-2", seed=2, shift=1e-4))
    assert found and {kind for kind, _ in found} == {"drift"}


def test_a_few_tokens_moving_far_are_found_token_by_token() -> None:
    """5 of 512 identical tokens moved by 0.5 nats: most prompts are unchanged, so a test over
    prompts cannot see it (q > alpha); comparing the identical tokens does."""
    found = evaluate_release(
        replay_run("0.32.0", "run-2", seed=2, moved=5), BASELINE, repeats=REPEATS, policy=POLICY
    )
    named = [f for f in found if (f.probe, f.arm) == REPLAY]
    assert [(f.kind, f.metric, f.severity) for f in named] == [("drift", "moved_tokens", "minor")]
    assert named[0].candidate_value == pytest.approx(5 / 512)
    assert "5 of 512 identical tokens moved by more than 0.01 nats" in named[0].detail
    many = replay_run("0.32.0", "run-2", seed=2, moved=20)
    severities = {f.severity for f in evaluate_release(many, BASELINE, policy=POLICY)}
    assert "major" in severities


def test_the_same_tokens_with_fresh_noise_are_quiet() -> None:
    assert replay_findings_of(replay_run("0.32.0", "run-2", seed=2)) == []


def test_another_corpus_is_said_and_not_compared() -> None:
    other = replay_run("0.32.0", "run-2", seed=2, shift=1e-4, corpus=7)
    assert not same_tokens(BASELINE.arms[REPLAY].trace, other.arms[REPLAY].trace)  # type: ignore[arg-type]
    assert [(t.probe, t.arm) for t in drift_tests(BASELINE, other, {}, POLICY)] == []
    assert replay_findings_of(other) == [("coverage", "tokens")]


def test_same_tokens_needs_same_places() -> None:
    trace = BASELINE.arms[REPLAY].trace
    assert trace is not None and same_tokens(trace, trace)
    moved = TokenArrays(
        trace.prompt_index,
        np.roll(trace.position, 1),
        trace.token_id,
        trace.vllm_logprob,
        trace.reference_logprob,
    )
    assert not same_tokens(trace, moved)


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.json")), ids=lambda p: p.stem)
def test_shipped_corpora_are_whole(path: Path) -> None:
    corpus = load_corpus(path, path.stem)
    assert len(corpus.sequences) == PROMPTS
    assert {len(s.token_ids) for s in corpus.sequences} == {TOKENS}
    assert [s.prompt_index for s in corpus.sequences] == list(range(PROMPTS))
    assert ReplayCorpus.model_validate_json(corpus.text()) == corpus


def test_both_bundled_models_ship_a_corpus() -> None:
    assert {load_corpus(p, p.stem).model for p in SHIPPED.glob("*.json")} == {"tiny", "smollm2"}


class CountingSampler:
    """Draws a fixed continuation and counts how often it was asked (a corpus is made once)."""

    def __init__(self) -> None:
        self.calls = 0

    def continuation(self, prompt_ids: list[int], n_tokens: int, seed: int) -> list[int]:
        self.calls += 1
        return [(seed + i) % 97 for i in range(n_tokens)]


def test_a_model_without_a_corpus_gets_one_made_once_and_kept(tmp_path: Path) -> None:
    prompts = [(i, [1, 2, 3 + i]) for i in range(PROMPTS + 4)]
    sampler = CountingSampler()
    made, origin = replay_corpus("mine", "0" * 16, prompts, sampler, tmp_path)
    assert origin.startswith("made now") and sampler.calls == PROMPTS
    kept, origin = replay_corpus("mine", "0" * 16, prompts, sampler, tmp_path)
    assert origin.startswith("kept") and sampler.calls == PROMPTS and kept == made
    assert corpus_path(tmp_path / "replay", "0" * 16).is_file()
    with pytest.raises(ValueError, match="not 1111"):
        load_corpus(corpus_path(tmp_path / "replay", "0" * 16), "1" * 4)


@pytest.mark.vllm
def test_the_tiny_corpus_is_made_again_exactly(
    release_python: Path, data_dir: Path, tmp_path: Path
) -> None:
    """The shipped tiny corpus is what the model draws on this machine: made again from the
    same seed, byte for byte (so a corpus never depends on where it was made). The tiny model
    trains to other weights on a CPU without AVX2, and the corpus of those ships too
    (docs/probes.md)."""
    done = subprocess.run(
        [
            str(release_python),
            "-m",
            "monitor.suite.replay",
            "tiny",
            "--out",
            str(tmp_path),
            "--cache-dir",
            str(data_dir / "models"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    made = Path(done.stdout.split("\t")[0])
    assert made.read_bytes() == (SHIPPED / made.name).read_bytes()
