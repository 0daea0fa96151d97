"""The suite's options as command-line options, derived from `SuiteOptions` (monitor.schema):
each field becomes `--field-name` with its default, limits and description, so `run` and
`backfill` take exactly what a run can be asked for, and a new option appears everywhere."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from monitor.cli.common import fail
from monitor.requests import RequestError, check_options
from monitor.schema import SuiteOptions, field_limits

LIST_SEPARATOR = ","


def option_parameter(name: str, field: FieldInfo) -> inspect.Parameter:
    """One SuiteOptions field as a typer option: lists are comma-separated, literal choices
    are listed in the help."""
    default = field.get_default(call_default_factory=True)
    kind: Any = field.annotation
    help_text = field.description or name
    low, high = field_limits(field)
    limits = {key: value for key, value in (("min", low), ("max", high)) if value is not None}
    if get_origin(kind) is list:
        kind, default = str, LIST_SEPARATOR.join(default)
        help_text += " (comma-separated)"
    elif get_origin(kind) is Literal:
        help_text += f": {' | '.join(get_args(kind))}"
        kind = str
    annotation = Annotated[kind, typer.Option(help=help_text, **limits)]  # type: ignore[valid-type]
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def parse_options(values: dict[str, Any]) -> SuiteOptions:
    """Command-line values (lists still comma-separated) as checked SuiteOptions, or the
    command ends with one line naming the problem."""
    parsed = dict(values)
    for name, field in SuiteOptions.model_fields.items():
        if get_origin(field.annotation) is list and isinstance(parsed.get(name), str):
            parsed[name] = [p.strip() for p in parsed[name].split(LIST_SEPARATOR) if p.strip()]
    try:
        return check_options(SuiteOptions.model_validate(parsed))
    except ValidationError as exc:
        first = exc.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-")
        fail(f"{flag}: {str(first['msg']).removeprefix('Value error, ')}")
    except RequestError as exc:
        fail(str(exc))


def with_suite_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` one option per SuiteOptions field; it receives them as `options`."""
    hints = get_type_hints(command, include_extras=True)
    own = [
        p.replace(annotation=hints[p.name])
        for p in inspect.signature(command).parameters.values()
        if p.name != "options"
    ]
    added = [option_parameter(name, field) for name, field in SuiteOptions.model_fields.items()]

    @functools.wraps(command)
    def wrapper(**values: Any) -> None:
        given = {name: values.pop(name) for name in SuiteOptions.model_fields if name in values}
        options = parse_options(given)
        command(**values, options=options)

    parameters = [*own, *added]
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper
