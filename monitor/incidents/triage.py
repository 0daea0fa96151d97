"""Triage: people set an incident's status and owner, recorded with who, when, from which
status and why. "intended" makes the release the series' new reference. The CLI and the
dashboard both come here, so what a person types is checked here: names are one line, notes may
hold several, and neither holds other control characters, bidi overrides or isolates, or lone
surrogates, which would otherwise be stored and later act on whoever's terminal shows them."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from monitor.incidents.lifecycle import record_event
from monitor.store import models as m
from monitor.store.errors import StoreError
from monitor.store.incident_reads import IncidentView, incident_view
from monitor.store.models import IncidentStatus, utcnow

MAX_NAME = 255
MAX_NOTE = 4000
MAX_ID = 2**63 - 1
"""Ids beyond a 64-bit signed id column are no incident (never looked up: drivers refuse them)."""
REFUSED = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
"""C0 and C1 control characters (NUL and tab included; newline too, except between a note's
lines) and DEL, the bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and
lone surrogates: refused in an owner, a triaging user or a note (whitespace around them is
stripped first, as it is not stored)."""


class IncidentError(StoreError):
    """Bad triage input or an incident the store does not hold (one line naming the problem)."""


def _checked_text(value: str, what: str, *, lines: bool = False) -> None:
    """Refuse text holding anything REFUSED (newlines allowed where `lines`), naming the field
    and the first such character."""
    found = REFUSED.search(value.replace("\n", " ") if lines else value)
    if found is not None:
        char = found.group()
        raise IncidentError(
            f"{what} must not contain control characters, bidi overrides or lone surrogates "
            f"(U+{ord(char):04X} at character {found.start() + 1})"
        )


def _checked_name(value: str | None, what: str, *, required: bool) -> str | None:
    if value is None or not value.strip():
        if required:
            raise IncidentError(f"{what} must not be empty")
        return None
    text = value.strip()
    if len(text) > MAX_NAME or "\n" in text:
        raise IncidentError(f"{what} must be one line of at most {MAX_NAME} characters")
    _checked_text(text, what)
    return text


def parse_status(status: str) -> IncidentStatus:
    """A triage status from user input ("false positive" and "false-positive" accepted)."""
    text = status.strip().lower().replace(" ", "_").replace("-", "_")
    try:
        return IncidentStatus(text)
    except ValueError:
        allowed = ", ".join(s.value for s in IncidentStatus)
        raise IncidentError(f"status must be one of {allowed}, not {status!r}") from None


def triage(
    session: Session,
    incident_id: int,
    status: str,
    owner: str | None,
    note: str,
    by: str,
) -> IncidentView:
    """Set an incident's status (and owner, when given) and record who did it, when, from which
    status, and why. "intended" makes the release the baseline of later detection."""
    new = parse_status(status)
    who = _checked_name(by, "the triaging user", required=True)
    assigned = _checked_name(owner, "owner", required=False)
    if len(note) > MAX_NOTE:
        raise IncidentError(f"note is {len(note)} characters long (at most {MAX_NOTE})")
    _checked_text(note.strip(), "note", lines=True)
    if not 0 < incident_id <= MAX_ID:
        raise IncidentError(f"no incident {incident_id} in the store")
    incident = session.get(m.IncidentRow, incident_id, with_for_update=True)
    if incident is None:
        raise IncidentError(f"no incident {incident_id} in the store")
    old = str(incident.status)
    incident.status = new
    if assigned is not None:
        incident.owner = assigned
    incident.updated_at = utcnow()
    session.flush()
    record_event(
        session,
        incident,
        new,
        note.strip(),
        by=str(who),
        from_status=old,
        owner=incident.owner,
    )
    session.flush()
    return incident_view(incident)
