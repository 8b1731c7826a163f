"""`mailprobe doctor`: is our side ready to verify a real list? A pre-flight, in plain words.

Runs the checks of network.py (resolver, port 25, HELO and PTR, MAIL FROM and SPF, blocklists)
and local.py (store, connectors, API keys) and gathers their findings in a Report; the store
keeps it for `mailprobe status`. `cheap=True` is the subset `mailprobe run` runs at start: DNS
questions and local checks only, no connection to a mail server or a CRM.
"""

from __future__ import annotations

import logging

from ..notify import notify
from ..settings import AppSettings
from ..store_async import AsyncStore
from .local import check_api, check_connectors, opened_store
from .network import check_blocklists, check_helo, check_mail_from, check_port_25, check_resolver
from .report import Finding, Outcome, Report

__all__ = ["Finding", "Outcome", "Report", "diagnose", "preflight_line", "run_doctor"]

log = logging.getLogger("mailprobe.doctor")


async def diagnose(settings: AppSettings, *, cheap: bool = False) -> Report:
    """Return the findings of every check (the cheap subset when `cheap`)."""
    engine = settings.engine
    findings: list[Finding] = list(await check_resolver(engine))
    observed: set[str] = set()
    if not cheap:
        port, observed = await check_port_25(engine, settings.doctor.smtp_hosts)
        findings.append(port)
    configured = list(engine.smtp.source_addresses) or sorted(observed)
    helo, helo_addresses = await check_helo(engine, configured)
    findings.append(helo)
    # Without a configured or observed source address, the HELO name's addresses are the best
    # guess of where we send from.
    sources = configured or helo_addresses
    findings += await check_mail_from(engine, sources)
    if not cheap:
        findings += await check_blocklists(engine, settings.doctor.blocklists, sources)
        findings += await check_connectors(settings)
    findings.append(check_api(settings))
    return Report(tuple(findings))


async def run_doctor(settings: AppSettings, *, cheap: bool = False) -> Report:
    """Return the report with the store's finding, and keep the report in the store."""
    report = await diagnose(settings, cheap=cheap)
    with opened_store(settings) as (store, finding):
        report = Report((*report.findings, finding), report.checked_at)
        if store is not None:
            store.save_doctor_report(report.to_json(), now=report.checked_at)
    return report


async def preflight_line(settings: AppSettings, store: AsyncStore) -> Report:
    """Run the cheap checks, keep the report, and log it as one line (`mailprobe run`'s start)."""
    report = await diagnose(settings, cheap=True)
    await store.save_doctor_report(report.to_json(), now=report.checked_at)
    failed = [f for f in report.findings if f.outcome is Outcome.FAIL]
    if failed:
        problems = "; ".join(f"{f.check}: {f.found} (fix: {f.fix})" for f in failed)
        log.warning("pre-flight: %s. %s", report.summary(), problems)
        # Our own side is broken: the operator hears of it before users see unknowns.
        checks = [{"check": f.check, "found": f.found, "fix": f.fix} for f in failed]
        notify("check_failed", {"checks": checks}, summary=f"pre-flight: {report.summary()}")
    else:
        log.info("pre-flight: %s", report.summary())
    return report
