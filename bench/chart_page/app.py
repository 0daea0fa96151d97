"""A page of `n` trend-like charts (3 series over 100 releases) drawn with Plotly or with
Vega-Lite (Altair), or none: what bench/chart_component.py times in Chromium."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

kind = st.query_params.get("kind", "none")
count = int(st.query_params.get("n", "1"))
versions = [f"0.{i // 10}.{i % 10}" for i in range(100)]
values = np.random.default_rng(0).normal(size=(count, 3, len(versions)))
st.title(f"{count} × {kind}")
for index in range(count):
    if kind == "plotly":
        figure = go.Figure()
        for series in range(3):
            figure.add_trace(go.Scatter(x=versions, y=values[index, series], mode="lines+markers"))
        st.plotly_chart(figure, key=f"plotly-{index}")
    elif kind == "vega":
        frame = pd.DataFrame(
            {
                "release": versions * 3,
                "value": values[index].ravel(),
                "series": np.repeat(["a", "b", "c"], len(versions)),
            }
        )
        chart = (
            alt.Chart(frame)
            .mark_line(point=True)
            .encode(
                x=alt.X("release:N", sort=versions),
                y="value:Q",
                color="series:N",
                tooltip=["release", "value", "series"],
            )
        )
        st.altair_chart(chart, key=f"vega-{index}")
st.dataframe(pd.DataFrame({"row": range(10)}))
