"""Incidents: every regressed release (one incident per release and configuration), and one in
detail: its findings with the numbers against the baseline, the most divergent tokens, the
confirmation run, the triage history and the alerts. Triage needs a signed-in user (OIDC login,
or the shared token when no login is configured), exactly as requesting runs does."""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st
from pydantic import ValidationError

from dashboard import auth, data, tables, tokens, ui
from dashboard.escape import code, md
from dashboard.incident_tables import INCIDENT_LINKS, incident_rows
from dashboard.state import PageState, cut, quoted, whole
from monitor.detection.findings import IncidentDraft
from monitor.incidents.triage import triage
from monitor.schema import validation_problem
from monitor.store.errors import StoreError
from monitor.store.incident_reads import IncidentDetail, IncidentView
from monitor.store.models import IncidentStatus

PAGE = "incidents"
STATUSES = [status.value for status in IncidentStatus]
TRIAGED = "incidents:triaged"


def _draft(shown: IncidentDetail) -> IncidentDraft | None:
    """The stored draft as detection wrote it, or None after saying why it cannot be read."""
    try:
        return IncidentDraft.model_validate(shown.draft)
    except ValidationError as exc:
        st.error(f"The incident's stored findings cannot be read: {md(validation_problem(exc))}")
        return None


def _finding_rows(draft: IncidentDraft) -> list[dict[str, object]]:
    return [
        {
            "severity": f.severity,
            "kind": f.kind,
            "series": f.series,
            "direction": f.direction,
            "baseline": f.baseline_value,
            "candidate": f.candidate_value,
            "limit": f.limit,
            "effect": f.effect,
            "noise floors": f.effect_in_floors,
            "q": f.q_value,
            "95% CI": "" if f.ci_low is None else f"[{f.ci_low:+.4g}, {f.ci_high:+.4g}]",
            "detail": f.detail,
        }
        for f in draft.findings
    ]


def _token_rows(
    draft: IncidentDraft, run_id: int, decode: tokens.Decode | None
) -> list[dict[str, object]]:
    return [
        {
            "arm": f"{t.probe}/{t.arm}",
            "prompt": t.prompt_index,
            "position": t.position,
            "token id": t.token_id,
            "token": tokens.visible(decode([t.token_id])) if decode else "",
            "in context": f"{tables.run_link(run_id)}&{urlencode({'arm': f'{t.probe}/{t.arm}'})}",
            "vLLM logprob": t.vllm_logprob,
            "trainer logprob": t.reference_logprob,
            "δ": t.delta,
        }
        for t in sorted(draft.divergent_tokens, key=lambda t: -abs(t.delta))
    ]


def _triage_form(ctx: ui.Context, access: auth.Access, incident: IncidentView) -> None:
    with st.form("triage"):
        status = st.selectbox(
            "Status", STATUSES, index=STATUSES.index(incident.status), key="triage:status"
        )
        owner = st.text_input(
            "Owner", value=incident.owner or "", max_chars=255, key="triage:owner"
        )
        note = st.text_area("Note", max_chars=4000, key="triage:note")
        name, token = auth.identity_inputs(access, "triage", *st.columns(2))
        submitted = st.form_submit_button("Save triage")
    if not submitted:
        return
    if auth.token_refused(
        access, token, ctx.settings.dashboard_token, "triage", "nothing was changed.", name
    ):
        return
    try:
        with data.store(ctx.url).writing() as session:
            triage(session, incident.id, status, owner or None, note, name)
    except StoreError as exc:
        st.error(f"Not saved: {md(exc)}")
        return
    data.clear()
    st.session_state[TRIAGED] = (incident.id, status)
    st.rerun()


def _triage(ctx: ui.Context, incident: IncidentView) -> None:
    st.subheader("Triage")
    access = auth.signed_in(ctx.settings.dashboard_token, "Triage")
    if access is None:
        return
    done = st.session_state.pop(TRIAGED, None)
    if done is not None:
        st.success(f"Incident {done[0]} is now {md(done[1])}.")
    _triage_form(ctx, access, incident)


def _show_findings(ctx: ui.Context, incident: IncidentView, draft: IncidentDraft) -> None:
    """The findings table, then the most divergent tokens decoded with the run's tokenizer."""
    ui.table(_finding_rows(draft), hide_index=True)
    st.subheader("Most divergent tokens")
    if not draft.divergent_tokens:
        st.caption("No token trace kept for the regressed arms.")
        return
    candidate = ui.read(lambda: data.run_detail(ctx.url, incident.candidate_run_id))
    spec = str(candidate.config.get("model", "")) if candidate.config else ""
    decode, reason = tokens.run_decoder(spec, candidate.model, ctx.settings)
    st.caption(f"Token ids only: {md(reason)}." if decode is None else f"Tokens {md(reason)}.")
    ui.table(
        _token_rows(draft, incident.candidate_run_id, decode),
        hide_index=True,
        column_config={"in context": st.column_config.LinkColumn(display_text="run detail")},
    )


def show_detail(ctx: ui.Context, incident_id: int) -> None:
    shown = ui.read(lambda: data.incident_detail(ctx.url, incident_id))
    incident = shown.incident
    st.title(f"Incident {incident.id}: {md(incident.release)}")
    one, two, three, four = st.columns(4)
    one.metric("Severity", md(incident.severity))
    two.metric("Status", md(incident.status))
    three.metric("Confirmation", md(incident.confirmation))
    four.metric("Owner", md(incident.owner or "—"))
    links = [
        f"[candidate run {incident.candidate_run_id}]({tables.run_link(incident.candidate_run_id)})"
    ]
    if incident.baseline_run_id is not None:
        links.append(
            f"[baseline {md(incident.baseline_release)} run {incident.baseline_run_id}]"
            f"({tables.run_link(incident.baseline_run_id)})"
        )
    else:
        links.append("no baseline (first release of the series)")
    if incident.confirmation_run_id is not None:
        links.append(
            f"[confirmation run {incident.confirmation_run_id}]"
            f"({tables.run_link(incident.confirmation_run_id)})"
        )
    st.markdown(" · ".join(links) + f" · model {code(incident.model)} on {md(incident.device)}")
    st.subheader("Findings")
    draft = _draft(shown)
    if draft is not None:
        _show_findings(ctx, incident, draft)
    st.subheader("History")
    ui.table(
        [
            {
                "when": e.at.strftime("%Y-%m-%d %H:%M:%S"),
                "by": e.by,
                "from": e.from_status or "",
                "to": e.to_status,
                "owner": e.owner or "",
                "note": e.note,
            }
            for e in shown.events
        ],
        hide_index=True,
    )
    if shown.alerts:
        st.subheader("Alerts")
        ui.table(
            [
                {
                    "target": a.target_index,
                    "state": a.state,
                    "attempts": a.attempts,
                    "sent": a.sent_at.strftime("%Y-%m-%d %H:%M:%S") if a.sent_at else "",
                    "last error": a.last_error or "",
                }
                for a in shown.alerts
            ],
            hide_index=True,
        )
    _triage(ctx, incident)


ctx = ui.context()
state = PageState(PAGE)
raw = st.query_params.get("incident")
if raw is not None:
    chosen_id = whole(raw)
    if chosen_id is None and raw.isascii() and raw.isdigit() and raw.strip("0"):
        ui.stop(f"no incident {cut(raw)} in the store")  # a number beyond any stored id
    if chosen_id is None:
        ui.stop(f"incident must be a positive whole number, not {quoted(raw)}")
    state.keep("incident", raw)
    st.page_link("app_pages/incidents.py", label="All incidents", query_params={})
    show_detail(ctx, chosen_id)
else:
    st.title("Incidents")
    chosen = st.multiselect("Status", STATUSES, key=state.pick_many("status", STATUSES, []))
    state.keep("status", chosen)
    rows = ui.read(lambda: data.incidents(ctx.url, statuses=tuple(chosen)))
    if rows:
        ui.table(incident_rows(rows), hide_index=True, column_config=INCIDENT_LINKS)
    else:
        st.info(
            "No incident" + (f" is {md(' or '.join(chosen))}." if chosen else " is stored yet.")
        )
state.publish()
