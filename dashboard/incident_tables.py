"""Rows of incident tables shared by the Overview and Incidents pages (pages are scripts, so
what two of them show lives here)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import tables

INCIDENTS_PAGE = "incidents"
OPEN_STATUSES = ("new", "investigating")
INCIDENT_LINKS = {
    "incident": st.column_config.LinkColumn("incident", display_text=r"incident=(\d+)"),
    "run": st.column_config.LinkColumn("run", display_text=r"run=(\d+)"),
}


def incident_link(incident_id: int) -> str:
    """Relative link to an incident's page."""
    return f"{INCIDENTS_PAGE}?incident={incident_id}"


def is_open(row: dict[str, Any]) -> bool:
    """New or under investigation, and not refuted by its confirmation run."""
    return row["status"] in OPEN_STATUSES and row["confirmation"] != "not_confirmed"


def incident_rows(incidents: list[dict[str, Any]]) -> list[dict[str, object]]:
    """One row per incident (as `data.incidents` returns them), linking it and its run."""
    return [
        {
            "incident": incident_link(row["id"]),
            "release": f"{row['package']}=={row['version']}",
            "severity": row["severity"],
            "status": row["status"],
            "confirmation": row["confirmation"],
            "owner": row["owner"] or "",
            "probes": ", ".join(row["probes"]),
            "metrics": ", ".join(row["metrics"]),
            "run": tables.run_link(row["candidate_run_id"]),
        }
        for row in incidents
    ]
