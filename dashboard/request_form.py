"""The run request form's option widgets, derived from the suite's one declaration of its
options (`monitor.schema.SuiteOptions`): each field becomes a widget with the field's default,
limits and description, so a new option appears in the form without editing it. The model is
limited to the dashboard's own choices (`FORM_MODELS`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo
from streamlit.delta_generator import DeltaGenerator

from dashboard.run_request import FORM_MODELS
from monitor.schema import PROBE_NAMES, SuiteOptions, field_limits

WidgetKind = Literal["select", "multiselect", "number", "checkbox"]
FORM = "request"
MODEL_HELP = "built here from packaged data (a form may not name a path on the server)"


@dataclass(frozen=True)
class OptionWidget:
    """How one option is asked for: the widget, its label and help, choices or limits, and
    the value it starts at."""

    name: str
    kind: WidgetKind
    help: str
    default: Any
    choices: tuple[Any, ...] = ()
    low: int | float | None = None
    high: int | float | None = None

    @property
    def key(self) -> str:
        return f"{FORM}:{self.name}"

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()


def option_widget(name: str, field: FieldInfo) -> OptionWidget:
    """The widget of one options field; TypeError for a type no widget can ask for."""
    default = field.get_default(call_default_factory=True)
    help_text = field.description or ""
    kind = field.annotation
    if name == "model":
        start = default if default in FORM_MODELS else FORM_MODELS[0]
        return OptionWidget(name, "select", MODEL_HELP, start, FORM_MODELS)
    if name == "probes":
        return OptionWidget(name, "multiselect", help_text, tuple(default), PROBE_NAMES)
    if get_origin(kind) is Literal:
        return OptionWidget(name, "select", help_text, default, get_args(kind))
    if kind is bool:
        return OptionWidget(name, "checkbox", help_text, default)
    if kind in (int, float):
        number: type[int] | type[float] = int if kind is int else float
        low, high = (None if limit is None else number(limit) for limit in field_limits(field))
        return OptionWidget(name, "number", help_text, number(default), low=low, high=high)
    raise TypeError(f"the request form has no widget for option {name} ({kind})")


def option_widgets(options: type[SuiteOptions] = SuiteOptions) -> list[OptionWidget]:
    """One widget per options field, in the fields' order."""
    return [option_widget(name, field) for name, field in options.model_fields.items()]


def ask(widget: OptionWidget, where: DeltaGenerator) -> Any:
    """Draw the widget in `where` and return its value."""
    if widget.kind == "select":
        return where.selectbox(
            widget.label,
            widget.choices,
            index=widget.choices.index(widget.default),
            key=widget.key,
            help=widget.help,
        )
    if widget.kind == "multiselect":
        return where.multiselect(
            widget.label,
            widget.choices,
            default=list(widget.default),
            key=widget.key,
            help=widget.help,
        )
    if widget.kind == "checkbox":
        return where.checkbox(widget.label, value=widget.default, key=widget.key, help=widget.help)
    return where.number_input(
        widget.label,
        min_value=widget.low,
        max_value=widget.high,
        value=widget.default,
        key=widget.key,
        help=widget.help,
    )


def ask_options(wide: DeltaGenerator, columns: Sequence[DeltaGenerator]) -> dict[str, Any]:
    """Every option's widget (multiple choices across `wide`, the others in turn in `columns`);
    the values by option name."""
    widgets = option_widgets()
    narrow = [widget for widget in widgets if widget.kind != "multiselect"]
    values = {
        widget.name: ask(widget, columns[index % len(columns)])
        for index, widget in enumerate(narrow)
    }
    for widget in widgets:
        if widget.kind == "multiselect":
            values[widget.name] = ask(widget, wide)
    return values
