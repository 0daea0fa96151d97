"""`parity recipe` (a release's parity recipe, in the user's config language) and `parity
upgrade` (can we move from one release to another, and what must we set). `upgrade` exits
0 safe as is, 1 safe with these recipe changes, 2 regression, 3 for a bad argument or a release
the store has not measured (even a malformed command line, so CI never reads it as a verdict)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand

from monitor.cli import common
from monitor.cli.common import fail, settings, shown, spec, transaction
from monitor.detection.errors import DetectionError
from monitor.engines import EngineSpecError, parse_engine, parse_package, parse_version
from monitor.recipe_formats import FORMATS, render
from monitor.upgrade import BAD_REQUEST, Upgrade, floors, markdown

out = Console(width=200, highlight=False, soft_wrap=True)
UPGRADE_FORMATS = ("text", "markdown", "json")


@contextmanager
def not_a_verdict() -> Iterator[None]:
    """Inside it, whatever ends the command early (a bad setting, an unreachable store, an
    unexpected error) exits BAD_REQUEST, never 1 or 2, which CI reads as verdicts."""
    try:
        yield
    except typer.Exit as exc:
        if exc.exit_code not in (0, BAD_REQUEST):
            raise typer.Exit(BAD_REQUEST) from None
        raise
    except Exception as exc:
        fail(common._unexpected(exc), BAD_REQUEST)


class BadRequestCommand(TyperCommand):
    """A command whose usage errors exit BAD_REQUEST, apart from its verdict exit codes."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as exc:
            setattr(exc, "exit_code", BAD_REQUEST)  # noqa: B010 (a class attribute otherwise)
            raise


def _release(text: str, engine: str | None, package: str) -> tuple[str, str]:
    """(package, version) from PACKAGE==VERSION or a bare VERSION."""
    try:
        if "==" in text:
            package_name, parsed = parse_engine(text)
            return package_name, str(parsed)
        return parse_package(engine or package), str(spec(parse_version, text))
    except EngineSpecError as exc:
        fail(str(exc), BAD_REQUEST)


def recipe(
    release: Annotated[str, typer.Argument(help="PACKAGE==VERSION, or a VERSION of --engine")],
    fmt: Annotated[str, typer.Option("--format", help=f"output: {' | '.join(FORMATS)}")] = "text",
    engine: Annotated[
        str | None, typer.Option(help="engine package (default PARITY_ENGINE_PACKAGE)")
    ] = None,
) -> None:
    """The engine settings and practices that restore parity on a release, each with the
    measured evidence behind it, derived from its newest stored run, and whether the stored
    recipe run verified them."""
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {shown(fmt)!r}", BAD_REQUEST)
    with not_a_verdict():
        chosen = settings()
        package, version = _release(release, engine, chosen.engine_package)

        def read(session: Any) -> Any:
            from monitor import advice  # its statistics take seconds to import: only here

            try:
                return advice.stored_recipe(session, package, version, chosen)
            except advice.AdviceError as exc:
                fail(str(exc), BAD_REQUEST)

        found = transaction(chosen, read)
    out.print(render(found.recipe, fmt, found.verified, found.unmeasured), end="", markup=False)


def upgrade_json(advice: Upgrade) -> str:
    """The upgrade as JSON (for scripts)."""
    document = {
        "package": advice.package,
        "from": advice.old,
        "to": advice.new,
        "runs": [advice.old_run, advice.new_run],
        "verdict": advice.verdict,
        "exit_code": advice.exit_code,
        "reasons": advice.reasons,
        "config_changes": [[c.key, c.old, c.new] for c in advice.config_changes],
        "knobs_added": advice.knobs_added,
        "knobs_removed": advice.knobs_removed,
        "moved": [f.model_dump(mode="json") for f in advice.moved],
        "recipe_changes": [[c.key, c.old, c.new] for c in advice.recipe_changes],
        "recipe": advice.new_recipe.model_dump(mode="json"),
        "verification": advice.verified.text,
        "open_incidents": advice.open_incidents,
        "not_measured": advice.unmeasured,
    }
    return json.dumps(document, indent=1, default=str) + "\n"


def upgrade_text(advice: Upgrade) -> str:
    """The upgrade for a terminal: the verdict first, then what it rests on."""
    lines = [
        f"{advice.package} {advice.old} -> {advice.new}: {advice.verdict} "
        f"(runs {advice.old_run} -> {advice.new_run})"
    ]
    lines += [f"  because {reason}" for reason in advice.reasons]
    lines += [f"  default {c.key}: {c.old} -> {c.new}" for c in advice.config_changes]
    lines += [f"  knob added: {knob}" for knob in advice.knobs_added]
    lines += [f"  knob removed: {knob}" for knob in advice.knobs_removed]
    lines += [
        f"  moved {f.direction}: {f.series} {f.baseline_value:.4g} -> {f.candidate_value:.4g}"
        f" ({floors(f):.1f} floors, {f.severity})"
        if f.baseline_value is not None and f.candidate_value is not None
        else f"  moved {f.direction}: {f.series} ({f.severity})"
        for f in advice.moved
    ]
    lines += [f"  recipe {c.key}: {c.old} -> {c.new}" for c in advice.recipe_changes]
    lines.append(f"  recipe of {advice.new}: {advice.verified.text}")
    if advice.unmeasured:
        lines.append(f"  not measured, so not in the recipe: {', '.join(advice.unmeasured)}")
    lines.append(f"  open incidents: {', '.join(advice.open_incidents) or 'none'}")
    return "\n".join(lines) + "\n"


def upgrade_command(
    old: Annotated[str, typer.Option("--from", help="the release in use (VERSION)")],
    new: Annotated[str, typer.Option("--to", help="the release to move to (VERSION)")],
    fmt: Annotated[
        str, typer.Option("--format", help=f"output: {' | '.join(UPGRADE_FORMATS)}")
    ] = "text",
    engine: Annotated[
        str | None, typer.Option(help="engine package (default PARITY_ENGINE_PACKAGE)")
    ] = None,
) -> None:
    """Can we move from one release to another, and what must we set? Exit 0 safe as is,
    1 safe with these recipe changes, 2 regression, 3 bad input or an unmeasured release."""
    if fmt not in UPGRADE_FORMATS:
        fail(
            f"--format must be one of {', '.join(UPGRADE_FORMATS)}, not {shown(fmt)!r}",
            BAD_REQUEST,
        )
    with not_a_verdict():
        chosen = settings()
        package, old_version = _release(old, engine, chosen.engine_package)
        new_package, new_version = _release(new, engine, chosen.engine_package)
        if new_package != package:
            fail(f"--from is {package} but --to is {new_package}", BAD_REQUEST)

        def read(session: Any) -> Upgrade:
            from monitor import advice  # its statistics take seconds to import: only here

            try:
                return advice.upgrade(session, package, old_version, new_version, chosen)
            except (advice.AdviceError, DetectionError) as exc:
                fail(str(exc), BAD_REQUEST)

        advice = transaction(chosen, read)
    text = {"markdown": markdown, "json": upgrade_json}.get(fmt, upgrade_text)(advice)
    out.print(text, end="", markup=False)
    raise typer.Exit(advice.exit_code)


def register(app: typer.Typer) -> None:
    app.command(cls=BadRequestCommand)(recipe)
    app.command(name="upgrade", cls=BadRequestCommand)(upgrade_command)
