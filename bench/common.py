"""Shared benchmark set-up: the sample issue and generated subscribers, as the engine sees them."""

from __future__ import annotations

import platform
import random
import statistics
import subprocess
from collections.abc import Callable

from newsletter.config import Settings
from newsletter.content.issue_intake import sample_issue_path
from newsletter.content.issue_yaml import load_issue
from newsletter.delivery.compose import IssueContext, RecipientData
from newsletter.directory import bundled_data_dir, read_reference
from newsletter.mail.settings import MailSettings
from newsletter.render.environment import make_environment


def context(settings: Settings | None = None) -> IssueContext:
    reference = read_reference(bundled_data_dir())
    return IssueContext(
        issue=load_issue(sample_issue_path().read_text(encoding="utf-8")),
        sectors={s.code: s for s in reference.sectors},
        embassies={e.code: e for e in reference.embassies},
        mail=MailSettings.of(settings or Settings(secret_key="b" * 40)),
        env=make_environment(),
    )


def recipients(ctx: IssueContext, n: int, seed: int = 2020) -> list[RecipientData]:
    """Subscribers like the sample lists: 0-3 sectors each, 20 % in English, all missions."""
    rng = random.Random(seed)
    codes, missions = sorted(ctx.sectors), sorted(ctx.embassies)
    return [
        RecipientData(
            subscriber_id=i + 1,
            email=f"reader{i}@{rng.choice(missions)}.example.org",
            name=rng.choice(["李伟", "王芳", "张敏", "Chen Jing", "刘洋", ""]),
            language="en" if rng.random() < 0.2 else "zh",
            embassy=rng.choice(missions),
            sectors=tuple(rng.sample(codes, rng.choice([0, 1, 1, 2, 2, 3]))),
            token_key=f"key{i:08d}",
        )
        for i in range(n)
    ]


def median_rate(run: Callable[[], int], repeats: int) -> tuple[float, list[float]]:
    """Median items per second over `repeats` runs of `run` (which returns items done)."""
    import time

    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = run()
        rates.append(done / (time.perf_counter() - started))
    return statistics.median(rates), rates


def machine() -> str:
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line),
            "?",
        )
    except OSError:
        model = "?"
    import os

    return f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, {model}"


def naive_message(ctx: IssueContext, r: RecipientData) -> bytes:
    """The naive way, per recipient: tailor, Jinja2 + MJML render, personalise, EmailMessage."""
    import email.utils
    from email import policy
    from email.headerregistry import Address
    from email.message import EmailMessage

    from newsletter.delivery.compose import audience_for
    from newsletter.mail.links import recipient_links
    from newsletter.mail.message import message_id
    from newsletter.render.digest import Recipient, personalise, render_digest
    from newsletter.tailor import select_items

    s = ctx.mail
    selection = select_items(ctx.issue, audience_for(r, ctx.embassies))
    digest = render_digest(ctx.issue, selection, language=r.language, sectors=ctx.sectors,
                           links=ctx.links, env=ctx.env)  # fmt: skip
    unsubscribe, preferences, mailto = recipient_links(s, r.token_key)
    filled = personalise(digest, Recipient(r.name, unsubscribe, preferences))
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(s.sender.name, addr_spec=s.sender.address)
    msg["To"] = Address(r.name, addr_spec=r.email)
    msg["Subject"] = filled.subject
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = message_id(s.secret, 1, r.subscriber_id, s.domain)
    msg["List-Id"] = f"<{s.list_id_header}>"
    msg["List-Unsubscribe"] = f"<{unsubscribe}>, <{mailto}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(filled.text, subtype="plain", charset="utf-8", cte="base64")
    msg.add_alternative(filled.html, subtype="html", charset="utf-8", cte="base64")
    return msg.as_bytes()
