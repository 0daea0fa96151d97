"""Run detail: one run's arms and metrics, then one arm down to single tokens: δ histogram, δ
against position, |δ| by token probability, trainer vs vLLM logprobs, the most divergent
tokens decoded, and the engine config that took effect."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, tables, tokens, ui
from dashboard.escape import code, md, visible
from dashboard.state import MAX_ID, PageState
from monitor.detection.errors import DetectionError
from monitor.gates import Tolerances
from monitor.store.views import ArmView, RunDetail
from monitor.verdicts import judge_arm

TOP_TOKENS = (10, 25, 50, 100)
# The arm's charts, two per tab, each tab drawn only while open: four charts at once held the
# page over 2 s in a browser (docs/benchmarks.md). A string here would be drawn on the page.
CHART_TABS = ("δ over the tokens", "δ token by token")
PENDING = ("queued", "running")
METRIC_COLUMN = st.column_config.NumberColumn(format="%.4g")


def _default_arm(arms: list[ArmView], tolerances: Tolerances) -> str:
    failing = [arm for arm in arms if judge_arm(arm, tolerances).verdict == "fail"]
    chosen = (failing or arms)[0]
    return f"{chosen.probe}/{chosen.arm}"


def _header(detail: RunDetail) -> None:
    st.title(f"Run {detail.id}: {md(detail.release)}")
    model = f"{detail.model.name} ({detail.model.fingerprint})" if detail.model else "—"
    lines = [
        f"**status** {md(detail.status)} · **runner** {md(detail.runner)} · **attempt** "
        f"{detail.attempt} · **model** {md(model)}"
    ]
    env = detail.environment
    if env is not None:
        lines.append(
            f"**device** {md(env.device)} · **vLLM** {md(env.vllm)} · **torch** "
            f"{md(env.torch)} · **transformers** {md(env.transformers)} · **python** "
            f"{md(env.python)}"
        )
    if detail.finished_at is not None:
        lines.append(f"**finished** {detail.finished_at:%Y-%m-%d %H:%M} UTC")
    st.markdown("  \n".join(lines))
    if detail.status in PENDING:
        st.info(f"This run is {md(detail.status)}; its results appear here when it finishes.")
    elif detail.status != "succeeded":
        st.error(f"The suite {md(detail.status)}: {md(detail.error or 'no error recorded')}")
        if detail.error_tail:
            st.code(detail.error_tail, language=None)


def _lazy_table(state: PageState, param: str, label: str, arms: list[ArmView]) -> None:
    """The arms' effective configs in an expander drawn only while open (a table costs the
    browser a few tenths of a second); `param` keeps it open in the URL."""
    box = st.expander(md(label), key=state.pick(param, (False, True), False), on_change="rerun")
    state.keep(param, True if box.open else None)
    if box.open:
        with box:
            ui.table(tables.effective_config_rows(arms), hide_index=True)


ctx = ui.context()
state = PageState("run_detail")
ui.require_runs(ctx)
newest = ui.read(lambda: data.runs(ctx.url, status="succeeded", limit=1)) or ui.read(
    lambda: data.runs(ctx.url, limit=1)
)
run_id = st.columns([1, 4])[0].number_input(
    "Run",
    min_value=1,
    max_value=MAX_ID,
    step=1,
    key=state.pick_int("run", newest[0].id if newest else 1),
)
state.keep("run", run_id)
detail = ui.read(lambda: data.run_detail(ctx.url, int(run_id)), "reading the run")
_header(detail)

config = detail.config
st.caption(
    md(
        f"suite config {detail.config_hash[:12]} · model {config.get('model')} · prompts "
        f"{config.get('prompts')} ({config.get('n_prompts')}) · T={config.get('temperature')} "
        f"top-p={config.get('top_p')} top-k={config.get('top_k')} max tokens "
        f"{config.get('max_tokens')} · engine {config.get('engine_dtype')} · trainer "
        f"{config.get('trainer_dtype')}"
    )
)
st.page_link(
    "app_pages/compare.py", label="Compare with another run", query_params={"b": str(run_id)}
)

if not detail.arms:
    st.info("This run stored no probe results.")
    state.publish()
    st.stop()

st.subheader("Arms")
ui.table(
    tables.arm_metric_rows(detail, ctx.settings.tolerances),
    hide_index=True,
    column_config={name: METRIC_COLUMN for name in tables.KEY_METRICS},
)

traced = [arm for arm in detail.arms if arm.trace_tokens > 0]
if not traced:
    st.info("No arm of this run kept a token trace.")
    state.publish()
    st.stop()
labels = [f"{arm.probe}/{arm.arm}" for arm in traced]
chosen = st.selectbox(
    "Arm",
    labels,
    format_func=visible,
    key=state.pick("arm", labels, _default_arm(traced, ctx.settings.tolerances)),
)
state.keep("arm", chosen)
arm = traced[labels.index(chosen)]
trace = ui.read(lambda: data.arm_trace(ctx.url, detail.id, arm.probe, arm.arm), "reading tokens")
reasons = tables.why(arm, ctx.settings.tolerances)
st.markdown(
    f"**{md(chosen)}**: {md(arm.description)}  \nreference {code(arm.reference)} · verdict "
    f"**{md(tables.shown_verdict(arm, ctx.settings.tolerances))}**"
    + (f" ({md(reasons)})" if reasons else "")
)
st.page_link(
    "app_pages/trends.py",
    label="This arm over releases",
    query_params={
        "probe": arm.probe,
        "arm": arm.arm,
        "metric": "k3",
        "package": detail.package,
        **({"model": detail.model.fingerprint} if detail.model else {}),
        **({"device": detail.environment.device} if detail.environment else {}),
    },
)

spread, per_token = st.tabs(
    CHART_TABS, key=state.pick("charts", CHART_TABS, CHART_TABS[0]), on_change="rerun"
)
state.keep("charts", CHART_TABS[1] if per_token.open else CHART_TABS[0])
if spread.open:
    left, right = spread.columns(2)
    left.markdown("**Histogram of δ**")
    left.altair_chart(
        charts.delta_histogram({f"run {detail.id}": trace.delta}), width="stretch", key="histogram"
    )
    right.markdown("**|δ| by token probability**")
    if arm.by_probability:
        right.altair_chart(
            charts.abs_delta_by_probability(arm.by_probability), width="stretch", key="buckets"
        )
    else:
        right.info("This arm stored no probability buckets.")
if per_token.open:
    left, right = per_token.columns(2)
    left.markdown("**δ against position**")
    left.altair_chart(charts.delta_by_position(trace), width="stretch", key="position")
    right.markdown("**Reference vs vLLM logprob**")
    right.altair_chart(
        charts.logprob_scatter(trace, arm.reference or "reference"), width="stretch", key="scatter"
    )

st.subheader("Most divergent tokens")
top = st.columns([1, 4])[0].selectbox(
    "How many", TOP_TOKENS, key=state.pick("top", TOP_TOKENS, TOP_TOKENS[0])
)
state.keep("top", top)
decode, reason = tokens.run_decoder(str(config.get("model", "")), detail.model, ctx.settings)
if decode is None:
    st.caption(f"Token ids only: {md(reason)}.")
else:
    st.caption(
        f"Tokens {md(reason)}; context: the completion's preceding tokens, [token], following."
    )
try:
    ui.table(
        tokens.divergent_token_rows(trace, int(top), decode),
        hide_index=True,
        column_config={name: METRIC_COLUMN for name in tokens.NUMBER_COLUMNS},
    )
except DetectionError as exc:
    st.error(f"cannot rank this arm's tokens: {md(exc)}")

st.subheader("Effective engine config")
st.caption("Read back from the running engine: what took effect, not what was asked for.")
_lazy_table(
    state, "config", f"The arms of {arm.probe}", [a for a in detail.arms if a.probe == arm.probe]
)
_lazy_table(state, "all_config", "Every arm of the run", detail.arms)
state.publish()
