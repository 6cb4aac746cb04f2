"""What a run of SMTP replies says about the relay, rather than about each recipient (pure).

One refused recipient is that recipient's problem. Ten refused in a row, none accepted in between,
is the relay's: a smarthost answering "550 5.1.1 User unknown in local recipient table" or "554
5.7.1 Relay access denied" to everyone says nothing about the addresses. So a permanent refusal
is held as a *suspect* until the relay accepts someone (then it stands) or the run of refusals
grows into a burst (then the campaign pauses and the suspects wait again, untouched).
Temporary refusals in a run mean the relay is deferring everyone: the campaign backs off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from newsletter.delivery.replies import Reply, Stage, Verdict, classify


class Signal(StrEnum):
    NONE = ""
    PAUSE = "pause"  # the fault is the server's or ours: stop, blame nobody, wait for staff
    BACK_OFF = "back-off"  # the server defers everyone: stop for a while, then try again


@dataclass
class RelayWatch:
    refusal_burst: int = 10  # permanent refusals in a row that make a relay fault
    deferral_burst: int = 10  # temporary refusals in a row that make the relay defer everyone
    closing_burst: int = 3  # 421s in a row (the transport already tried a fresh connection)
    # ... and at least this many recipient domains among them: one dead domain is no relay fault.
    refusal_domains: int = 3
    refusals: int = 0
    deferrals: int = 0
    closings: int = 0
    connection_faults: int = 0
    last: Reply = field(default_factory=lambda: Reply(0))  # the latest refusal, for the reason
    domains: set[str] = field(default_factory=set)

    def suspect(self, reply: Reply) -> bool:
        """Whether a refusal must wait for the relay to prove itself before it is held against anyone."""
        return classify(reply) in (Verdict.FAIL, Verdict.BOUNCE) and reply.stage in (
            Stage.RCPT,
            Stage.DATA,
        )

    def observe(self, reply: Reply, rcpt: str = "") -> Signal:
        verdict = classify(reply)
        if verdict is Verdict.SENT:
            self.refusals = self.deferrals = self.closings = self.connection_faults = 0
            self.domains = set()
            return Signal.NONE
        self.last = reply
        if verdict is Verdict.PAUSE:
            return Signal.PAUSE
        if self.suspect(reply):
            self.refusals += 1
            self.domains.add(rcpt.rpartition("@")[2].lower())
            burst = (
                self.refusals >= self.refusal_burst and len(self.domains) >= self.refusal_domains
            )
            return Signal.PAUSE if burst else Signal.NONE
        if verdict in (Verdict.RETRY, Verdict.DEFER):
            self.deferrals += 1
            self.closings = self.closings + 1 if reply.code == 421 else 0
            self.connection_faults = self.connection_faults + 1 if reply.code == 0 else 0
            if self.closings >= self.closing_burst or self.connection_faults >= self.closing_burst:
                return Signal.PAUSE
            return Signal.BACK_OFF if self.deferrals >= self.deferral_burst else Signal.NONE
        return Signal.NONE

    def reason(self, signal: Signal) -> str:
        """Why, in words a staff member can act on (call right after `observe` gave `signal`)."""
        last, example = self.last, str(self.last)
        if signal is Signal.NONE:
            return ""
        if signal is Signal.BACK_OFF:
            return (
                f"the SMTP server deferred {self.deferrals} recipients in a row ({example}); "
                "backing off, nobody's delivery is given up"
            )
        if last.stage is Stage.MAIL and classify(last) is Verdict.PAUSE:
            return (
                f"the SMTP server refused our sender address at MAIL FROM ({example}); that says "
                "nothing about any recipient: check [sender] address and the relay, then resume"
            )
        if classify(last) is Verdict.PAUSE:
            return example
        if self.closings >= self.closing_burst:
            return (
                f"the SMTP server keeps closing fresh connections with 421 ({example}); "
                "too busy or rate limited: resume later"
            )
        if self.connection_faults >= self.closing_burst:
            return f"cannot reach the SMTP server: {last.text}"
        return (
            f"the SMTP server refused {self.refusals} recipients at {len(self.domains)} domains in a "
            f"row and accepted none ({example}): that is the relay, not {self.refusals} bad "
            "addresses; nobody was marked failed or bounced. Check the relay's configuration, "
            "then resume"
        )
