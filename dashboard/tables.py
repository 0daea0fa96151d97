"""Tables of the dashboard as plain rows (lists of dicts) and the status matrix as HTML, built
from the store's views; every verdict shown is judged here with the configured tolerances
(monitor.verdicts), never read from the store. Pure: no store, no Streamlit."""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from dashboard.trend import version_order
from monitor.gates import Tolerances
from monitor.store.views import (
    ArmView,
    Change,
    ReleaseInfo,
    RunComparison,
    RunDetail,
    RunSummary,
    StatusMatrix,
)
from monitor.verdicts import ArmFacts, judge_arm, judge_probe, verdict_counts

Row = dict[str, Any]
RUN_PAGE = "run_detail"
KEY_METRICS = (
    "k3",
    "k1",
    "mean_abs_delta",
    "max_abs_delta",
    "token_mult_prob_error",
    "clip_fraction",
    "n_tokens",
)
VERDICT_STYLE = {
    "pass": ("#c8e6c9", "#1b5e20"),
    "fail": ("#ffcdd2", "#b71c1c"),
    "n/a": ("#eeeeee", "#616161"),
}
STATUS_MARK = {"failed": "✗ failed", "timed_out": "✗ timed out", "cancelled": "cancelled"}
STATUS_MARK |= {"queued": "queued", "running": "running"}
CONTRAST = "contrast"


def run_link(run_id: int, page: str = RUN_PAGE) -> str:
    """Relative link to a run's page (relative, so it works under any base path)."""
    return f"{page}?{urlencode({'run': run_id})}"


def shown_verdict(arm: ArmFacts | None, tolerances: Tolerances) -> str:
    """An arm's verdict as tables show it: "contrast" for a contrast arm (never gated), else
    its judged verdict; "—" where the run has no such arm."""
    if arm is None:
        return "—"
    return judge_arm(arm, tolerances).verdict if arm.gated else CONTRAST


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else ""


def newest_per_package(releases: Iterable[ReleaseInfo]) -> list[ReleaseInfo]:
    """The highest version of each engine package, packages by name."""
    newest: dict[str, ReleaseInfo] = {}
    for release in releases:
        known = newest.get(release.package)
        if known is None or version_order(release.version) > version_order(known.version):
            newest[release.package] = release
    return [newest[package] for package in sorted(newest)]


def _release_note(release: ReleaseInfo) -> str:
    if release.installable is False:
        return "not installable"
    if release.yanked:
        return "yanked"
    if release.latest_status in STATUS_MARK:
        return STATUS_MARK[release.latest_status]
    return "" if release.n_runs else "no run"


def tested(release: ReleaseInfo) -> bool:
    """Whether anything was learnt of a release: it has a run (of any outcome), or an attempt
    found it not installable. Only discovered: neither."""
    return release.n_runs > 0 or release.installable is False


@dataclass(frozen=True)
class ReleaseCounts:
    """How many releases were discovered and how many of them were tested."""

    discovered: int
    tested: int

    @property
    def untested(self) -> int:
        return self.discovered - self.tested

    def toggle_label(self) -> str:
        """The label of the switch that shows the untested releases too."""
        return f"{self.discovered} discovered, {self.tested} tested — show all"


def release_counts(releases: Iterable[ReleaseInfo]) -> ReleaseCounts:
    releases = list(releases)
    return ReleaseCounts(len(releases), sum(tested(release) for release in releases))


def shown_releases(matrix: StatusMatrix, *, show_all: bool) -> StatusMatrix:
    """The matrix with its tested releases only, unless `show_all`: at 100 discovered releases
    and a handful tested, the rest would be rows of dots."""
    if show_all:
        return matrix
    return replace(matrix, releases=[release for release in matrix.releases if tested(release)])


def matrix_html(matrix: StatusMatrix, tolerances: Tolerances, *, newest_first: bool = True) -> str:
    """Releases × probes, each cell coloured by the probe's verdict (judged from its arms) in
    the newest succeeded run of the release and linking to that run. Every stored string is
    escaped."""
    releases = sorted(
        matrix.releases, key=lambda r: (r.package, version_order(r.version)), reverse=newest_first
    )
    head = "".join(f"<th>{_breakable(probe)}</th>" for probe in matrix.probes)
    rows = []
    for release in releases:
        note = _release_note(release)
        title = html.escape(release.install_error or note, quote=True)
        cells = [
            f'<th class="release" title="{title}">{html.escape(release.label)}'
            + (f' <span class="note">{html.escape(note)}</span>' if note else "")
            + "</th>"
        ]
        for probe in matrix.probes:
            cell = matrix.cell(release.id, probe)
            if cell is None:
                cells.append('<td class="empty">·</td>')
                continue
            verdict = judge_probe(cell.arms, tolerances)
            background, color = VERDICT_STYLE[verdict]
            label = html.escape(verdict)
            tip = html.escape(f"{release.label} {probe}: {verdict} (run {cell.run_id})", True)
            cells.append(
                f'<td style="background:{background}"><a href="{run_link(cell.run_id)}" '
                f'target="_self" style="color:{color}" title="{tip}">{label}</a></td>'
            )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<style>{MATRIX_CSS}</style>"
        f'<div class="parity-matrix"><table><thead><tr><th>release</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _breakable(name: str) -> str:
    """A probe name for a column header, escaped, that may wrap after its underscores (and
    nowhere else), so eight or nine probes fit the page's width without wrapping mid-word."""
    return html.escape(name).replace("_", "_<wbr>")


MATRIX_CSS = (
    ".parity-matrix{overflow:auto;max-height:36rem;max-width:100%}"
    ".parity-matrix table{border-collapse:separate;border-spacing:0;font-size:0.85rem;"
    "border-top:1px solid #e0e0e0;border-left:1px solid #e0e0e0}"
    ".parity-matrix th,.parity-matrix td{border-right:1px solid #e0e0e0;"
    "border-bottom:1px solid #e0e0e0;padding:0.2rem 0.5rem;text-align:center;"
    "white-space:nowrap;background:#fff}"
    ".parity-matrix thead th{position:sticky;top:0;z-index:2;background:#fafafa;"
    "white-space:normal;word-break:keep-all;overflow-wrap:normal;vertical-align:bottom}"
    ".parity-matrix th.release,.parity-matrix thead th:first-child{position:sticky;left:0;"
    "text-align:left}"
    ".parity-matrix th.release{z-index:1;font-weight:600}"
    ".parity-matrix thead th:first-child{z-index:3}"
    ".parity-matrix .note{font-weight:400;color:#b71c1c;font-size:0.75rem}"
    ".parity-matrix td a{text-decoration:none;font-weight:600;display:block}"
    ".parity-matrix td.empty{color:#bdbdbd}"
)


def run_rows(runs: Iterable[RunSummary], tolerances: Tolerances) -> list[Row]:
    """One row per run for a runs table, newest first, with a link to its page and how many of
    its arms pass, fail or get no verdict (the summaries must carry the gated metrics)."""
    rows = []
    for run in runs:
        verdicts = verdict_counts(run.arms, tolerances)
        rows.append(
            {
                "run": run_link(run.id),
                "release": run.release,
                "status": run.status,
                "pass": verdicts["pass"],
                "fail": verdicts["fail"],
                "n/a": verdicts["n/a"],
                "model": run.model or "",
                "device": run.device or "",
                "runner": run.runner,
                "attempt": run.attempt,
                "started": _when(run.started_at),
                "finished": _when(run.finished_at),
                "error": run.error or "",
            }
        )
    return rows


def arm_metric_rows(
    detail: RunDetail, tolerances: Tolerances, metrics: Sequence[str] = KEY_METRICS
) -> list[Row]:
    """Per arm: verdict, the chosen metrics, and why it failed or does not apply."""
    rows = []
    for arm in detail.arms:
        row: Row = {"probe": arm.probe, "arm": arm.arm, "verdict": shown_verdict(arm, tolerances)}
        for name in metrics:
            row[name] = arm.metrics.get(name)
        row["reference"] = arm.reference
        row["why"] = why(arm, tolerances)
        rows.append(row)
    return rows


def why(arm: ArmFacts, tolerances: Tolerances) -> str:
    """The reasons of an arm's verdict: the gates it breaks, why it does not apply, or that it
    is a contrast."""
    return "; ".join(judge_arm(arm, tolerances).reasons)


def effective_config_rows(arms: Iterable[ArmView]) -> list[Row]:
    """Per arm, what took effect in the engine (read back from it, not what was asked for);
    every value as text, "—" where the release does not expose a setting."""
    arms = list(arms)
    settings = list(dict.fromkeys(k for arm in arms for k in (arm.effective_config or {})))
    rows = []
    for arm in arms:
        config = arm.effective_config or {}
        row: Row = {"probe": arm.probe, "arm": arm.arm}
        row |= {name: _text(config.get(name)) for name in settings}
        if arm.effective_config is None:
            row["note"] = arm.reason or "no engine config recorded"
        rows.append(row)
    if any("note" in row for row in rows):
        for row in rows:
            row.setdefault("note", "")
    return rows


def _text(value: Any) -> str:
    return "—" if value is None else str(value)


def metric_delta_rows(
    comparison: RunComparison,
    tolerances: Tolerances,
    metrics: Sequence[str] = KEY_METRICS,
    probe: str | None = None,
) -> list[Row]:
    """Per arm and metric: the value in run a, in run b, and b − a."""
    rows = []
    for arm in comparison.arms:
        if probe and arm.probe != probe:
            continue
        by_name = {delta.metric: delta for delta in arm.metrics}
        for name in metrics:
            delta = by_name.get(name)
            if delta is None:
                continue
            rows.append(
                {
                    "probe": arm.probe,
                    "arm": arm.arm,
                    "metric": name,
                    "a": delta.a,
                    "b": delta.b,
                    "b − a": delta.delta,
                    "verdict a": shown_verdict(arm.a, tolerances),
                    "verdict b": shown_verdict(arm.b, tolerances),
                }
            )
    return rows


def _change_row(change: Change, **where: str) -> Row:
    return {**where, "setting": change.key, "a": _text(change.a), "b": _text(change.b)}


def effective_config_diff_rows(comparison: RunComparison) -> list[Row]:
    """Every arm's effective-config setting that differs between the two runs."""
    return [
        _change_row(change, probe=arm.probe, arm=arm.arm)
        for arm in comparison.arms
        for change in arm.effective_config_changes
    ]


def changed_defaults(comparison: RunComparison) -> list[Row]:
    """Effective settings that changed the same way in every arm both runs share (with an
    engine config): what the release changed by default, not what an arm asked for."""
    configured = [
        arm
        for arm in comparison.arms
        if arm.a is not None
        and arm.b is not None
        and (_gets_verdict(arm.a) or _gets_verdict(arm.b))
    ]
    counts = Counter(
        (change.key, repr(change.a), repr(change.b))
        for arm in configured
        for change in arm.effective_config_changes
    )
    first = {
        (change.key, repr(change.a), repr(change.b)): change
        for arm in configured
        for change in arm.effective_config_changes
    }
    return [
        {**_change_row(first[key]), "arms": n}
        for key, n in sorted(counts.items())
        if configured and n == len(configured)
    ]


def _gets_verdict(arm: ArmView) -> bool:
    """Whether an arm gets a pass/fail verdict: applicable and gated (else n/a, whatever the
    tolerances)."""
    return arm.applicable and arm.gated


def run_config_diff_rows(comparison: RunComparison) -> list[Row]:
    """What the two runs were asked to do differently, and what their environments differ in."""
    return [_change_row(change, kind="suite config") for change in comparison.config_changes] + [
        _change_row(change, kind="environment") for change in comparison.environment_changes
    ]
