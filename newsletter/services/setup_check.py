"""`newsletter check`: the sending setup judged (the guard every smtp send passes is
`runtime.require_sendable`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from newsletter import runtime
from newsletter.config import Settings
from newsletter.delivery.smtp import probe
from newsletter.mail.sending_setup import (
    DnsRecord,
    Finding,
    blockers,
    dns_records,
    judge_base_url,
    judge_bounce_domain,
    judge_dkim,
    judge_smtp,
)


@dataclass(frozen=True)
class SetupReport:
    findings: list[Finding]
    records: list[DnsRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not blockers(self.findings)


def check_setup(settings: Settings, *, probe_relay: bool = False) -> SetupReport:
    key, problem = runtime.read_dkim_key(settings)
    relay = probe(settings.smtp, local_hostname=settings.domain) if probe_relay else None
    findings = [
        *judge_base_url(settings),
        *judge_dkim(settings, key, problem),
        *judge_smtp(settings, relay),
        *judge_bounce_domain(settings),
    ]
    return SetupReport(findings, dns_records(settings, key))
