"""Rows of incident tables shared by the Overview and Incidents pages (pages are scripts, so
what two of them show lives here)."""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

from dashboard import tables
from monitor.store.incident_reads import IncidentView

INCIDENTS_PAGE = "incidents"
INCIDENT_LINKS = {
    "incident": st.column_config.LinkColumn("incident", display_text=r"incident=(\d+)"),
    "run": st.column_config.LinkColumn("run", display_text=r"run=(\d+)"),
}


def incident_link(incident_id: int) -> str:
    """Relative link to an incident's page."""
    return f"{INCIDENTS_PAGE}?incident={incident_id}"


def incident_rows(incidents: Iterable[IncidentView]) -> list[dict[str, object]]:
    """One row per incident, linking it and its candidate run."""
    return [
        {
            "incident": incident_link(incident.id),
            "release": incident.release,
            "severity": incident.severity,
            "status": incident.status,
            "confirmation": incident.confirmation,
            "owner": incident.owner or "",
            "probes": ", ".join(incident.probes),
            "metrics": ", ".join(incident.metrics),
            "run": tables.run_link(incident.candidate_run_id),
        }
        for incident in incidents
    ]
