"""A Vega-Lite chart's layers with their data rows: from an Altair chart (its inline datasets)
or from a Streamlit page under AppTest (the Arrow datasets Streamlit sends beside the spec)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from streamlit.testing.v1 import AppTest


@dataclass
class Layer:
    spec: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def mark(self) -> str:
        mark = self.spec["mark"]
        return str(mark["type"] if isinstance(mark, dict) else mark)

    def column(self, field: str) -> list[Any]:
        return [row[field] for row in self.rows]


@dataclass
class Figure:
    spec: dict[str, Any]
    layers: list[Layer]

    def named(self, part: str) -> list[dict[str, Any]]:
        """Rows (of every layer) whose legend name contains `part`."""
        return [row for layer in self.layers for row in layer.rows if part in row.get("name", "")]

    def layer(self, mark: str, name_part: str = "") -> Layer:
        """The one layer of this mark whose rows' names contain `name_part`."""
        (found,) = [
            layer
            for layer in self.layers
            if layer.mark == mark and all(name_part in r.get("name", "") for r in layer.rows)
        ]
        return found


def _figure(spec: dict[str, Any], datasets: dict[str, list[dict[str, Any]]]) -> Figure:
    parts = spec.get("layer", [spec])
    return Figure(spec, [Layer(part, datasets[part["data"]["name"]]) for part in parts])


def of_chart(chart: Any) -> Figure:
    spec = chart.to_dict()
    return _figure(spec, spec["datasets"])


def charts_of(at: AppTest) -> list[Figure]:
    """Every Vega-Lite chart on the page, in order."""
    figures = []
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        datasets = {
            ds.name: pa.ipc.open_stream(ds.data.data).read_all().to_pylist()
            for ds in element.proto.datasets
        }
        figures.append(_figure(spec, datasets))
    return figures


def of_app(at: AppTest, name: str) -> Figure:
    """The page's chart named `name` (the charts module names each one)."""
    (found,) = [figure for figure in charts_of(at) if figure.spec.get("name") == name]
    return found
