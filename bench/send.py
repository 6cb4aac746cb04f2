"""Sending throughput and memory against Postfix's smtp-sink, beside smtp-source and a naive sender.

One command: `.venv/bin/python bench/send.py` (installs Debian's postfix for smtp-sink/smtp-source
when missing, without starting the Postfix daemon). In one run it measures:
- our engine sending the sample issue to N generated subscribers (SQLite ledger, real SMTP),
- smtp-source (Postfix's C load generator): as many messages of the same mean size, same sessions,
- the naive sender (per recipient Jinja2 + MJML + EmailMessage, one smtplib connection) on a slice,
- peak memory of our engine at --sizes (default 20,000 and 100,000): the max RSS of a fresh sender
  process plus that of its composing helper process when it starts one (see --helper).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import context, machine, naive_message, recipients

HERE = Path(__file__).resolve().parent


def ensure_postfix_tools() -> None:
    if shutil.which("smtp-sink") and shutil.which("smtp-source"):
        return
    print(
        "installing Debian's postfix for smtp-sink/smtp-source (the daemon is not started)",
        file=sys.stderr,
    )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    answer = "postfix postfix/main_mailer_type select No configuration"
    subprocess.run(
        [*sudo, "sh", "-c", f"echo '{answer}' | debconf-set-selections"], check=True, env=env
    )
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "postfix"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    for path in ("/usr/sbin", "/usr/lib/postfix"):
        os.environ["PATH"] += os.pathsep + path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(
        [shutil.which("smtp-sink") or "smtp-sink", *user, f"127.0.0.1:{port}", "1024"]
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sink
        except OSError:
            time.sleep(0.05)
    sink.kill()
    raise SystemExit("smtp-sink did not start")


def build_database(folder: Path, n: int) -> Path:
    """A fresh instance with the sample issue and n generated active subscribers (bulk insert)."""
    from sqlalchemy import insert
    from sqlmodel import Session

    from newsletter import directory
    from newsletter.config import load_settings, sample_config
    from newsletter.content.issue_intake import sample_issue_path
    from newsletter.content.issue_yaml import load_issue
    from newsletter.db import make_engine, upgrade
    from newsletter.issues import save_issue
    from newsletter.models import Subscriber, SubscriberSector, SubscriberStatus

    config = folder / "newsletter.toml"
    config.write_text(sample_config(), encoding="utf-8")
    settings = load_settings(config)
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    with Session(engine) as session:
        directory.sync_reference(session, directory.read_reference(directory.bundled_data_dir()))
        text = sample_issue_path().read_text(encoding="utf-8")
        save_issue(session, load_issue(text), text)
        people = recipients(context(), n)
        session.execute(
            insert(Subscriber),
            [{"id": r.subscriber_id, "email": f"r{r.subscriber_id}@{r.embassy}.example.org",
              "name": r.name, "embassy_code": r.embassy, "language": r.language,
              "status": SubscriberStatus.ACTIVE, "token_key": r.token_key} for r in people],
        )  # fmt: skip
        links = [
            {"subscriber_id": r.subscriber_id, "sector_code": c} for r in people for c in r.sectors
        ]
        if links:
            session.execute(insert(SubscriberSector), links)
        session.commit()
    engine.dispose()
    return config


HELPER = {"auto": None, "on": True, "off": False}


def peak_kib() -> int:
    """This process's peak resident memory since it started (VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the closest there is


def child_send(config: Path, port: int, concurrency: int, batch_size: int, helper: str) -> None:
    """Run in a fresh process: send the whole campaign, print JSON with rate and peak memory.

    The services `newsletter send` runs, in its two steps, so that only the second (the engine
    sending every row, as before) is timed: preparing the campaign fills the ledger first.
    """
    from newsletter.config import load_settings
    from newsletter.services.actors import Actor
    from newsletter.services.sending import prepare_campaign, send_campaign_rows

    loaded = load_settings(config)
    settings = loaded.model_copy(update={
        "smtp": loaded.smtp.model_copy(update={"port": port, "concurrency": concurrency}),
        "delivery": loaded.delivery.model_copy(update={"batch_size": batch_size}),
    })  # fmt: skip
    prepare_campaign(settings, "2020-01", actor=Actor.system("bench", "bench"))
    started, cpu = time.perf_counter(), time.process_time()
    report = send_campaign_rows(settings, "2020-01", transport="smtp", helper=HELPER[helper])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    # Our own peak is VmHWM: Linux carries ru_maxrss across exec, so a child of this benchmark
    # (which holds the whole generated list) would report the benchmark's size, not its own.
    # A helper process that composed for the engine has exited and been waited for by now:
    # RUSAGE_CHILDREN holds its peak (at least our size when it was spawned, before any batch)
    # and its CPU. Both peaks are added, as if they came at the same moment.
    ours = peak_kib()
    helper_use = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {"sent": report.sent, "seconds": seconds, "bytes": report.bytes, "profiles": report.profiles,
              "peak_mib": (ours + helper_use.ru_maxrss) / 1024,
              "sender_mib": ours / 1024, "helper_mib": helper_use.ru_maxrss / 1024,
              "cpu_seconds": cpu,
              "helper_cpu_seconds": helper_use.ru_utime + helper_use.ru_stime}  # fmt: skip
    print(json.dumps(result))


def run_child(config: Path, port: int, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(config), "--port", str(port),
         "--concurrency", str(args.concurrency), "--batch-size", str(args.batch_size),
         "--helper", args.helper],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if "database is locked" in out.stderr:
        raise SystemExit(f"SQLite lock errors while sending:\n{out.stderr}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def smtp_source(port: int, count: int, size: int, sessions: int) -> float:
    """Messages per second of Postfix's smtp-source for `count` messages of `size` bytes."""
    started = time.perf_counter()
    subprocess.run(
        [shutil.which("smtp-source") or "smtp-source", "-s", str(sessions), "-l", str(size), "-m", str(count),
         "-f", "newsletter@newsletter.example.org", "-t", "reader@example.org", f"127.0.0.1:{port}"],
        check=True,
    )  # fmt: skip
    return count / (time.perf_counter() - started)


def naive_rate(port: int, n: int) -> float:
    """Per recipient: Jinja2 + MJML + EmailMessage, sent over one smtplib connection."""
    ctx = context()
    people = recipients(ctx, n, seed=7)
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, local_hostname=ctx.mail.domain) as smtp:
        for r in people:
            smtp.sendmail(ctx.mail.sender.address, [r.email], naive_message(ctx, r))
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--sizes", default="20000,100000", help="list sizes for peak memory")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--naive", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=500, help="ledger rows per claim")
    parser.add_argument(
        "--helper", choices=sorted(HELPER), default="auto",
        help="compose in a helper process: auto (by campaign size, as `newsletter send`), on, off",
    )  # fmt: skip
    parser.add_argument("--child", type=Path)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.child:
        child_send(args.child, args.port, args.concurrency, args.batch_size, args.helper)
        return

    ensure_postfix_tools()
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ours = []
            for i in range(args.repeats):
                folder = Path(tmp) / f"run{i}"
                folder.mkdir()
                ours.append(run_child(build_database(folder, args.subscribers), port, args))
            ours.sort(key=lambda r: r["sent"] / r["seconds"])
            mid = ours[len(ours) // 2]
            rate = mid["sent"] / mid["seconds"]
            size = int(mid["bytes"] / mid["sent"])
            source = sorted(
                smtp_source(port, args.subscribers, size, args.concurrency)
                for _ in range(args.repeats)
            )
            source_rate = source[len(source) // 2]
            naive = naive_rate(port, args.naive)
            memory = {}
            for n in (int(x) for x in args.sizes.split(",")):
                folder = Path(tmp) / f"mem{n}"
                folder.mkdir()
                memory[n] = run_child(build_database(folder, n), port, args)
    finally:
        sink.terminate()
        sink.wait()

    print(f"machine: {machine()}")
    print(f"sample issue 2020-01 to {args.subscribers:,} generated subscribers, "
          f"{args.concurrency} SMTP sessions, {mid['profiles']:.0f} profiles, "
          f"mean message {size:,} bytes")  # fmt: skip
    runs = ", ".join(f"{r['sent'] / r['seconds']:,.0f}" for r in ours)
    print(f"ours        : {rate:8,.0f} msg/s (median of {args.repeats}: {runs})")
    print(f"smtp-source : {source_rate:8,.0f} msg/s (same count, size, sessions; C, no rendering)")
    print(f"ratio       : ours / smtp-source = {rate / source_rate:.2f}")
    print(
        f"naive       : {naive:8,.0f} msg/s ({args.naive} recipients); ours is {rate / naive:,.1f}x faster"
    )
    for n, r in memory.items():
        throughput = r["sent"] / r["seconds"]
        split = (
            f"sender {r['sender_mib']:.0f} + helper {r['helper_mib']:.0f} MiB, "
            if r["helper_mib"]
            else ""
        )
        print(
            f"peak memory : {r['peak_mib']:6.0f} MiB at {n:,} subscribers "
            f"({split}{throughput:,.0f} msg/s)"
        )


if __name__ == "__main__":
    main()
