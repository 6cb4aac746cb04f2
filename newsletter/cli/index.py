"""Which modules define each root command and group, and its line in `newsletter --help`.

`newsletter --help` and `--version` read this instead of importing every command's module (the
web app, the console, the engine, MJML): they start in a fraction of the time. A command's
module is imported when the command is used. `tests/test_cli_index.py` holds this table equal
to the commands the modules define, help lines included.
"""

from __future__ import annotations

COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "admin": (
        ("admin",),
        "The staff console (accounts: `newsletter staff`).",
    ),
    "audit": (
        ("audit",),
        "The audit chain: every staff, subscriber and system action.",
    ),
    "bounces": (
        ("bounces",),
        "Read bounce reports (delivery status notifications).",
    ),
    "campaign": (
        ("approvals", "campaigns"),
        "Follow and control campaigns.",
    ),
    "check": (
        ("check",),
        (
            "Judge the sending setup (https links, DKIM, the relay) and print the DNS records to "
            "publish. Exit 1 when something would make `send` refuse or providers reject the "
            "mail."
        ),
    ),
    "demo": (
        ("setup",),
        "A fresh instance in DIR: sample data and issue loaded, every digest sent, a summary.",
    ),
    "digest": (
        ("schedule",),
        "Recurring digests of issues not yet received.",
    ),
    "embassies": (
        ("calendar", "reference"),
        "The embassy directory.",
    ),
    "explain": (
        ("sending",),
        "Why each item of an issue is in or out of one subscriber's digest.",
    ),
    "inbox": (
        ("inbox",),
        "Read the mail that comes back: bounces, complaints, mailto unsubscribes.",
    ),
    "init": (
        ("setup",),
        (
            "Create newsletter.toml (if missing), the database at the latest schema, and "
            "reference data."
        ),
    ),
    "issue": (
        ("issues",),
        "Import, convert, list and show issues.",
    ),
    "preview": (
        ("sending",),
        "Write the digest one subscriber would get (HTML, or the text part with --text).",
    ),
    "requests": (
        ("requests",),
        'Follow "connect me" (对接) requests on cooperation demands.',
    ),
    "run": (
        ("schedule",),
        (
            "Scheduler, sender, (with --web) the web pages and (with --admin) the staff console, "
            "until SIGTERM/SIGINT (then exit 0)."
        ),
    ),
    "schedule": (
        ("schedule",),
        ("Send an issue at each mission's local hour: `newsletter schedule SLUG --local 09:00`."),
    ),
    "sectors": (
        ("reference",),
        "The sector taxonomy.",
    ),
    "send": (
        ("sending",),
        ("Send an issue to every active subscriber not yet sent it (re-running never re-sends)."),
    ),
    "serve": (
        ("web",),
        "Serve the subscriber pages; `base_url` in the config is the address readers see.",
    ),
    "staff": (
        ("staff",),
        "Console accounts: roles, missions, second factor.",
    ),
    "subscribers": (
        ("subscribers",),
        "Manage subscriber lists.",
    ),
    "worker": (
        ("campaigns",),
        (
            "Send due rows of every sending campaign until SIGTERM/SIGINT (then finish in-flight,"
            " exit 0)."
        ),
    ),
}
