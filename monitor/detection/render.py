"""The text of an alert, rendered from an incident draft alone."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from monitor.detection.errors import DetectionError
from monitor.detection.findings import SEVERITY_RANK, Finding, IncidentDraft

MAX_FINDING_LINES = 12
MAX_TOKEN_LINES = 5


def _num(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def _signed(value: float) -> str:
    return f"{value:+.4g}"


def run_link(dashboard_url: str, run_id: str) -> str:
    """Deep link to the run's page on the dashboard."""
    parts = urlsplit(dashboard_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DetectionError(f"dashboard URL {dashboard_url!r} is not an http(s) URL")
    return f"{dashboard_url.strip().rstrip('/')}/run_detail?run={quote(run_id, safe='')}"


def finding_line(finding: Finding) -> str:
    """One readable line: the series, what happened, and the numbers against the baseline."""
    head = f"{finding.series} [{finding.kind}, {finding.severity}, {finding.direction}]"
    if finding.kind in ("unmeasured", "coverage"):
        return f"{head}: {finding.detail}"
    if finding.kind == "gate" and (finding.limit is None or finding.candidate_value is None):
        return f"{head}: {finding.detail}"
    if finding.kind == "gate":
        text = f"{head}: {_num(finding.candidate_value)} breaks limit {finding.limit:g}"
        if finding.baseline_value is not None:
            text += f" (baseline {_num(finding.baseline_value)})"
        return f"{text} - {finding.detail}" if finding.detail else text
    text = f"{head}: "
    if finding.baseline_value is not None:
        text += f"baseline {_num(finding.baseline_value)} -> "
    text += f"candidate {_num(finding.candidate_value)}"
    if finding.effect is not None:
        text += f", effect {_signed(finding.effect)}"
    if finding.noise_floor is not None and finding.effect_in_floors is not None:
        text += f" = {finding.effect_in_floors:.1f}x noise floor {_num(finding.noise_floor)}"
    if finding.p_value is not None:
        text += f", p = {finding.p_value:.2g}"
    if finding.q_value is not None:
        text += f", q = {finding.q_value:.2g}"
    if finding.ci_low is not None and finding.ci_high is not None:
        text += f", 95% CI [{_signed(finding.ci_low)}, {_signed(finding.ci_high)}]"
    if finding.n_prompts is not None:
        text += f", {finding.n_prompts} prompts"
    return f"{text} - {finding.detail}" if finding.detail else text


def render_alert(incident: IncidentDraft, dashboard_url: str) -> tuple[str, str]:
    """(title, body): the release, what regressed, the numbers against the baseline, a link."""
    link = run_link(dashboard_url, incident.run_id)
    what = ", ".join(incident.metrics) or "metrics"
    where = ", ".join(incident.probes) or "probes"
    against = f" vs {incident.baseline_release}" if incident.baseline_release else ""
    title = f"[{incident.severity}] vLLM {incident.release}: {what} regressed in {where}{against}"
    if incident.probes == ["release"]:
        title = f"[{incident.severity}] vLLM {incident.release} could not be measured ({what})"
    baseline = (
        f"baseline {incident.baseline_release} (run {incident.baseline_run_id})"
        if incident.baseline_release
        else "no baseline (the first measured release of the series)"
    )
    lines = [f"vLLM {incident.release} (run {incident.run_id}) against {baseline}."]
    regressed = [f for f in incident.findings if SEVERITY_RANK[f.severity] > 0]
    noted = [f for f in incident.findings if SEVERITY_RANK[f.severity] == 0]
    lines.append(f"Regressions ({len(regressed)}):")
    lines += [f"- {finding_line(f)}" for f in regressed[:MAX_FINDING_LINES]]
    if len(regressed) > MAX_FINDING_LINES:
        lines.append(f"- ... and {len(regressed) - MAX_FINDING_LINES} more")
    if noted:
        lines.append(f"Also noted ({len(noted)}, info): {', '.join(f.series for f in noted[:8])}")
    if incident.divergent_tokens:
        lines.append("Most divergent tokens (delta = reference - vLLM logprob):")
        for token in incident.divergent_tokens[:MAX_TOKEN_LINES]:
            lines.append(
                f"- {token.probe}/{token.arm} token #{token.index} (prompt {token.prompt_index}, "
                f"position {token.position}, id {token.token_id}): delta {_signed(token.delta)}"
            )
    lines.append(f"Details: {link}")
    return title, "\n".join(lines)
