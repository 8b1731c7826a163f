"""The dashboard page as HTML: a header, summary tiles, and one panel per concern.

Owns the words, layout and style of the page; the figures come from figures.py, the charts
from charts.py. Everything stored that came from outside (domain names, server replies,
connector errors) is escaped here. The page has no script: it refreshes itself once a minute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from mailprobe.connectors.fields import REASON_LABELS
from mailprobe.engine import Reason

from ..store import PassRecord, RunOutcome
from .charts import Series, e, fill_defs, legend, meter_rows, share_bar, stacked_columns, swatch
from .figures import (
    DEFERRING_SHOWN,
    DEFERRING_WINDOW,
    HEALTH_DAYS,
    PASSES_SHOWN,
    DoctorReport,
    Figures,
    by_day_table,
    days_of,
)

STATUSES = (
    Series("valid", "valid"),
    Series("catch_all", "catch-all"),
    Series("risky", "risky"),
    Series("invalid", "invalid"),
    Series("unknown", "unknown"),
)
_OUTCOME_TEXT = {
    "ok": "✓ ok",
    "running": "… running",
    "failed": "✗ failed",
    "fatal": "✗ fatal",
    "stopped": "■ stopped",
    "interrupted": "■ interrupted",
}
_WAITING = Series("waiting", "waiting for verification")
_TO_WRITE = Series("to_write", "waiting to be written back")
_REFRESH_S = 60


def page(figures: Figures | None, *, problem: str | None = None) -> str:
    """Return the whole dashboard; without a store, say where the figures would come from."""
    if problem is not None:
        body = _panel("The store cannot be read", f"<p>{e(problem)}</p>", wide=True)
        return _document(body, generated=None)
    if figures is None:
        body = (
            '<section class="panel"><h2>No store</h2><p>This API runs without a store, so there '
            "is nothing to chart. Run <code>mailprobe serve</code> or <code>mailprobe run</code> "
            "with <code>store.path</code> set to see list health, passes and the queue.</p>"
            "</section>"
        )
        return _document(body, generated=None)
    body = "".join(
        [
            _tiles(figures),
            _health(figures),
            _deferring(figures),
            _connectors(figures),
            _queue(figures),
            _doctor(figures.doctor, figures.now),
        ]
    )
    return _document(body, generated=figures.now)


def _document(body: str, *, generated: datetime | None) -> str:
    when = f"as of {_clock(generated)} · " if generated else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{_REFRESH_S}">'
        '<link rel="icon" href="data:,">'
        f"<title>mailprobe dashboard</title><style>{_STYLE}</style></head><body>"
        f"{fill_defs()}<header><h1>mailprobe</h1><p>{when}refreshes every minute · "
        '<a href="docs">API reference</a> · <a href="metrics">metrics</a></p></header>'
        f"<main>{body}</main></body></html>"
    )


def _tiles(f: Figures) -> str:
    stored = sum(f.by_status.values())
    waiting = sum(q.waiting for q in f.queue)
    to_write = sum(q.to_write for q in f.queue)
    doctor = _doctor_word(f.doctor)
    tiles = [
        ("Answers stored", f"{stored:,}", f"{f.by_status.get('valid', 0):,} valid"),
        ("Waiting for verification", f"{waiting:,}", f"{to_write:,} to write back"),
        ("Retries scheduled", f"{f.retries.scheduled:,}", f"{f.retries.due:,} due now"),
        (
            "Domains deferring us",
            _at_least(len(f.deferring), DEFERRING_SHOWN),
            "in the last 24 hours",
        ),
        ("Pre-flight check", doctor[0], doctor[1]),
    ]
    cells = "".join(
        f'<li class="tile"><span class="k">{e(k)}</span><span class="v">{e(v)}</span>'
        f'<span class="s">{e(s)}</span></li>'
        for k, v, s in tiles
    )
    return f'<ul class="tiles" aria-label="At a glance">{cells}</ul>'


def _at_least(count: int, shown: int) -> str:
    """Return a count of listed items, `20+` when the list was cut at `shown`."""
    return f"{count:,}+" if count >= shown else f"{count:,}"


def _health(f: Figures) -> str:
    days = days_of(f.now)
    table = by_day_table(f.by_day, days)
    # Every 7th day, counted back from today so that today is always labelled.
    labels = [_day_label(day) if (len(days) - 1 - i) % 7 == 0 else ""
              for i, day in enumerate(days)]  # fmt: skip
    chart = stacked_columns(
        title=f"Answers by status per day, last {HEALTH_DAYS} days",
        desc=_series_desc(table, days),
        columns=[_day_label(day) for day in days],
        column_labels=labels,
        series=STATUSES,
        values=table,
    )
    totals = share_bar(
        title="All stored answers by status",
        parts=[(s, f.by_status.get(s.kind, 0)) for s in STATUSES],
    )
    return _panel(
        "List health",
        f"<p>Addresses by the day their current answer was verified (UTC), last {HEALTH_DAYS} "
        f"days.</p>{chart}{legend(STATUSES)}<h3>Everything stored</h3>{totals}"
        f"{legend(STATUSES, f.by_status)}{_day_table(table, days)}",
        wide=True,
    )


def _series_desc(table: dict[str, list[int]], days: Sequence[str]) -> str:
    totals = ", ".join(f"{s.label} {sum(table.get(s.kind, [])):,}" for s in STATUSES)
    return f"From {days[0]} to {days[-1]}: {totals}. The table below lists each day."


def _day_table(table: dict[str, list[int]], days: Sequence[str]) -> str:
    head = "".join(f"<th scope=col>{e(s.label)}</th>" for s in STATUSES)
    rows = "".join(
        f"<tr><th scope=row>{e(day)}</th>"
        + "".join(f"<td>{table.get(s.kind, [0] * len(days))[i]:,}</td>" for s in STATUSES)
        + "</tr>"
        for i, day in reversed(list(enumerate(days)))
        if any(table.get(s.kind, [0] * len(days))[i] for s in STATUSES)
    )
    rows = rows or f'<tr><td colspan="{len(STATUSES) + 1}">No answers in these days.</td></tr>'
    return (
        "<details><summary>Figures per day</summary><table><thead><tr><th scope=col>day</th>"
        f"{head}</tr></thead><tbody>{rows}</tbody></table></details>"
    )


def _connectors(f: Figures) -> str:
    if not f.passes:
        return _panel("Connectors", "<p>No connector is configured and no pass is logged.</p>")
    cards = "".join(_connector(name, passes, f.now) for name, passes in f.passes.items())
    return _panel("Connectors", cards, wide=True)


def _connector(name: str, passes: Sequence[PassRecord], now: datetime) -> str:
    if not passes:
        return f'<article class="card"><h3>{e(name)}</h3><p>No pass yet.</p></article>'
    last = passes[0]
    oldest_first = list(reversed(passes))
    outcomes = [Series(str(o), str(o)) for o in RunOutcome if any(p.outcome == o for p in passes)]
    chart = stacked_columns(
        title=f"{name}: addresses verified per pass, last {len(passes)} passes",
        desc="Each column is one pass, oldest first, shaded by how it ended; the table lists them.",
        columns=[f"pass {p.id} ({p.kind}, {p.outcome})" for p in oldest_first],
        column_labels=[""] * len(oldest_first),
        series=outcomes,
        values={
            str(o): [p.counts.verified if p.outcome == o else 0 for p in oldest_first]
            for o in RunOutcome
        },
        height=170,
        slots=PASSES_SHOWN,
    )
    return (
        f'<article class="card"><h3>{e(name)} {_badge(str(last.outcome))}</h3>'
        f"<p>Last pass {_time(last.ended_at or last.started_at, now)}"
        f"{_pass_error(last)}</p>{_last_failure(passes, now)}{chart}{legend(outcomes)}"
        f"{_pass_table(passes[:8])}</article>"
    )


def _pass_error(p: PassRecord) -> str:
    return f': <span class="err">{e(_clip(p.error, 200))}</span>' if p.error else ""


def _last_failure(passes: Sequence[PassRecord], now: datetime) -> str:
    """Return the latest failed pass before the last one, with its error: worth a look."""
    failed = [p for p in passes[1:] if p.outcome in (RunOutcome.FAILED, RunOutcome.FATAL)]
    if not failed:
        return ""
    p = failed[0]
    return f"<p>Last failed pass {_time(p.started_at, now)}{_pass_error(p)}</p>"


def _pass_table(passes: Sequence[PassRecord]) -> str:
    rows = "".join(
        f"<tr><td>{_time(p.started_at)}</td><td>{e(p.kind)}</td><td>{_badge(str(p.outcome))}"
        f"</td><td>{_duration(p)}</td><td>{p.counts.pulled:,}</td><td>{p.counts.queued:,}</td>"
        f"<td>{p.counts.verified:,}</td><td>{p.counts.written:,}</td>"
        f"<td>{p.counts.failed:,}</td></tr>"
        for p in passes
    )
    head = "".join(
        f"<th scope=col>{h}</th>"
        for h in ("started", "kind", "outcome", "took", "pulled", "queued", "verified",
                  "written", "failed")
    )  # fmt: skip
    return f'<table class="passes"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _queue(f: Figures) -> str:
    rows = [(q.connector, [(_WAITING, q.waiting), (_TO_WRITE, q.to_write)]) for q in f.queue]
    if not rows:
        return _panel("Queue", "<p>No connector is configured.</p>")
    chart = meter_rows(title="Queue depth per connector", rows=rows)
    retries = (
        f"<p>{f.retries.scheduled:,} unknown answers wait for their retry time; "
        f"{f.retries.due:,} are due and join the queue at the next retry pass.</p>"
    )
    return _panel("Queue", chart + legend([_WAITING, _TO_WRITE]) + retries)


def _deferring(f: Figures) -> str:
    hours = int(DEFERRING_WINDOW.total_seconds() // 3600)
    title = "Domains deferring or blocking us"
    if not f.deferring:
        return _panel(title, f"<p>None in the last {hours} hours.</p>")
    rows = "".join(
        f"<tr><th scope=row>{e(d.domain)}</th><td>{d.addresses:,}</td>"
        f"<td>{_reasons(d.reasons)}</td>"
        f"<td>{e(d.provider or d.mx_host or '')}</td>"
        f"<td class=reply>{e(_clip(d.last_reply or '', 160))}</td>"
        f"<td>{_time(d.last_checked, f.now)}</td></tr>"
        for d in f.deferring
    )
    head = "".join(
        f"<th scope=col>{h}</th>"
        for h in ("domain", "addresses", "why", "provider", "latest reply", "last checked")
    )
    return _panel(
        title,
        f"<p>Greylisting, rate limits, temporary failures and blocks in the last {hours} hours, "
        "most addresses first; they are asked again when the server said.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>",
        wide=True,
    )


def _reasons(reasons: Mapping[str, int]) -> str:
    return ", ".join(
        f'<span title="{e(REASON_LABELS.get(Reason(r), r))}">{e(r.replace("_", " "))} {n:,}</span>'
        for r, n in sorted(reasons.items())
    )


def _doctor(report: DoctorReport | None, now: datetime) -> str:
    title = "Pre-flight check (mailprobe doctor)"
    if report is None:
        return _panel(
            title,
            "<p>Not run yet. <code>mailprobe doctor</code> checks the resolver, port 25, "
            "HELO and PTR, SPF, blocklists, the store and the CRM credentials.</p>",
        )
    items = "".join(
        f"<li>{_badge(c.outcome)} <b>{e(c.name)}</b> {e(c.detail)}</li>" for c in report.checks
    )
    return _panel(title, f"<p>Ran {_time(report.ran_at, now)}.</p><ul class=checks>{items}</ul>")


def _doctor_word(report: DoctorReport | None) -> tuple[str, str]:
    if report is None:
        return "not run yet", "mailprobe doctor"
    failed = sum(c.outcome == "failed" for c in report.checks)
    return ("all ok", "") if not failed else (f"{failed} failed", f"of {len(report.checks)}")


def _panel(title: str, content: str, *, wide: bool = False) -> str:
    return f'<section class="panel{" wide" if wide else ""}"><h2>{e(title)}</h2>{content}</section>'


def _badge(outcome: str) -> str:
    """Return an outcome as a pill: its swatch, a sign and the word (never colour alone)."""
    text = _OUTCOME_TEXT.get(outcome, {"warning": "! warning"}.get(outcome, outcome))
    mark = swatch(outcome) if outcome in _OUTCOME_TEXT else ""
    return f'<span class="badge">{mark}{e(text)}</span>'


def _clock(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _time(moment: datetime, now: datetime | None = None) -> str:
    iso = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    shown = _ago(now, moment) if now else moment.strftime("%d %b %H:%M")
    return f'<time datetime="{iso}" title="{iso}">{shown}</time>'


def _ago(now: datetime | None, moment: datetime) -> str:
    """Return `moment` as people say it: `5 min ago`, `3 h ago`, `2 days ago`."""
    if now is None:
        return _clock(moment)
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 90:
        return "just now"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    if seconds < 48 * 3600:
        return f"{round(seconds / 3600)} h ago"
    return f"{seconds // 86400} days ago"


def _duration(p: PassRecord) -> str:
    if p.ended_at is None:
        return "–"
    seconds = (p.ended_at - p.started_at).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _day_label(day: str) -> str:
    moment = datetime.strptime(day, "%Y-%m-%d")
    return f"{moment.day} {moment:%b}"


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


_STYLE = """
:root{--bg:#f4f6f8;--card:#fff;--ink:#1c2530;--muted:#5b6672;--line:#dde3e9;--accent:#1565c0}
@media (prefers-color-scheme:dark){:root{--bg:#12171d;--card:#1b222b;--ink:#e6edf3;
--muted:#9aa7b4;--line:#2d3743;--accent:#64b5f6}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.5em 1.5em;padding:1em 1.5em;
background:var(--card);border-bottom:1px solid var(--line)}
header h1{margin:0;font-size:1.3em;letter-spacing:.02em}
header p{margin:0;color:var(--muted)}
a{color:var(--accent)}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1em;
padding:1em 1.5em;max-width:1400px;margin:0 auto}
.tiles{grid-column:1/-1;display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));
gap:1em;margin:0;padding:0;list-style:none}
.tile{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8em 1em;
display:flex;flex-direction:column}
.tile .k{color:var(--muted);font-size:.85em}.tile .v{font-size:1.7em;font-weight:600}
.tile .s{color:var(--muted);font-size:.85em}
.panel{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1em 1.2em;
min-width:0}
.panel.wide{grid-column:1/-1}
h2{margin:0 0 .4em;font-size:1.1em}h3{margin:1em 0 .4em;font-size:1em}
p{margin:.3em 0 .6em}
.chart{width:100%;height:auto;display:block}
.chart text{fill:var(--muted);font:13px system-ui,sans-serif}
.chart .label{fill:var(--ink);font-size:13px}.chart .value{fill:var(--ink);font-size:13px}
.chart .grid{stroke:var(--line);stroke-width:1}.chart .base{stroke:var(--muted);stroke-width:1}
.chart .track{fill:var(--bg)}.chart .empty{fill:var(--bg)}
.legend{display:flex;flex-wrap:wrap;gap:.3em 1.2em;margin:.5em 0;padding:0;list-style:none;
font-size:.9em}
.legend li{display:flex;align-items:center;gap:.35em}
.swatch{flex:none;vertical-align:-2px}
.cards{display:grid}
.card{border-top:1px solid var(--line);padding-top:.4em;margin-top:.6em}
.card:first-of-type{border-top:0;margin-top:0}
table{border-collapse:collapse;width:100%;font-size:.9em;margin:.4em 0}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid var(--line);vertical-align:top}
thead th{color:var(--muted);font-weight:600}
td.reply{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;word-break:break-word}
.badge{display:inline-flex;align-items:center;gap:.3em;font-size:.85em;font-weight:600;
padding:.05em .5em;border-radius:1em;border:1px solid var(--line);white-space:nowrap}
.err{color:#c62828}
details summary{cursor:pointer;color:var(--accent);margin:.5em 0}
.checks{list-style:none;padding:0}.checks li{margin:.3em 0}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
"""
