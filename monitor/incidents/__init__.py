"""Incidents: one per regressed release and series configuration. `lifecycle` opens, updates
and confirms them (detection's drafts, the confirmation re-run), `triage` records what people
decide, `outbox` writes the alerts a confirmation sends (monitor.alerts delivers them)."""
