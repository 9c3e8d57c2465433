"""Measure how fast a lab starts and stops, and how soon a submitted message can be read over IMAP.

    python benchmarks/bench_lab.py [--runs N] [--output PATH]

Prints a table and writes the same numbers as JSON (benchmarks/results.json by default).
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import smtplab

TARGETS_MS = {"start": 150.0, "submit_to_imap": 60.0}
# "Visible over IMAP" is measured the way mail clients wait for mail: in IDLE (RFC 2177), the server
# pushes `* N EXISTS` when the message lands, and the client fetches it. Polling (NOOP + SEARCH every
# few ms, a load no real client makes) is measured too, without a target.
IMAP_TIMEOUT = 10.0  # seconds a message may take to become visible before the run counts as failed
# The IMAP client shares the process (and the GIL) with the lab, as in a notebook: polling without any
# pause steals time from the relay and inflates the very latency it measures. 2 ms between polls keeps
# that interference small and bounds the measurement's granularity to one poll plus 2 ms.
POLL_INTERVAL = 0.002
SENDER, RECIPIENT = "alice@example.org", "bob@example.net"


def stats(samples: list[float]) -> dict[str, float]:
    """Summarise samples (seconds) in milliseconds: median, min, max and the quartiles."""
    ms = sorted(s * 1000 for s in samples)
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else (ms[0], ms[0], ms[0])
    return {"n": len(ms), "median": statistics.median(ms), "min": ms[0], "max": ms[-1], "q1": q1, "q3": q3}


def measure_start_stop(runs: int) -> tuple[float, list[float], list[float]]:
    """Return the first (cold) start, then `runs` warm start and stop times, in seconds."""
    began = time.perf_counter()
    first = smtplab.start()
    cold = time.perf_counter() - began  # to ready, as for the others (its stop is not counted)
    first.stop()
    starts, stops = [], []
    for _ in range(runs):
        began = time.perf_counter()
        lab = smtplab.start()
        starts.append(time.perf_counter() - began)
        began = time.perf_counter()
        lab.stop()
        stops.append(time.perf_counter() - began)
    return cold, starts, stops


def wait_visible(imap: imaplib.IMAP4, message_id: str, after: int, deadline: float, interval: float) -> int | None:
    """Poll the selected mailbox (NOOP, then SEARCH by Message-ID) until the message shows up.

    Only messages numbered above `after` are searched, so a poll costs the same for the first message
    and the last. Returns the message's sequence number, or None at the deadline.
    """
    while time.perf_counter() < deadline:
        imap.noop()
        status, data = imap.search(None, f"{after + 1}:*", "HEADER", "Message-ID", message_id)
        if status == "OK" and data and data[0].split():
            return int(data[0].split()[-1])
        time.sleep(interval)
    return None


def measure_submit_to_imap(runs: int, interval: float) -> tuple[list[float], list[float]]:
    """Return, per message, the submission time and the time until the message is visible over IMAP."""
    submits, visible = [], []
    with smtplab.start() as lab:
        imap = lab.imap(RECIPIENT)
        try:
            status, data = imap.select("INBOX")
            seen = int(data[0])
            for number in range(runs):
                began = time.perf_counter()
                result = lab.send(SENDER, RECIPIENT, f"benchmark {number}", "timing\n", wait=False)
                submitted = time.perf_counter()
                found = wait_visible(imap, result.message_id, seen, submitted + IMAP_TIMEOUT, interval)
                if found is None:
                    raise SystemExit(
                        f"message {number} ({result.message_id}) not visible over IMAP "
                        f"after {IMAP_TIMEOUT:g} s; queue: {lab.queue[-1]}"
                    )
                visible.append(time.perf_counter() - began)
                submits.append(submitted - began)
                seen = found
        finally:
            imap.logout()
    return submits, visible


def _idle_until_exists(imap: imaplib.IMAP4, deadline: float) -> int | None:
    """IDLE (RFC 2177) until the server pushes `* N EXISTS`; end the IDLE and return N (None at the deadline)."""
    tag = imap._new_tag()
    imap.send(tag + b" IDLE\r\n")
    if not imap.readline().startswith(b"+"):
        raise SystemExit("the IMAP server refused IDLE")
    found = None
    imap.sock.settimeout(max(0.1, deadline - time.perf_counter()))
    try:
        while found is None:
            line = imap.readline()
            if not line:
                raise SystemExit("the IMAP server closed the connection during IDLE")
            if line.startswith(b"* ") and line.rstrip().endswith(b" EXISTS"):
                found = int(line.split()[1])
    except TimeoutError:
        pass
    finally:
        imap.sock.settimeout(IMAP_TIMEOUT)
        imap.send(b"DONE\r\n")
        while not imap.readline().startswith(tag):
            pass
    return found


def measure_submit_to_idle(runs: int) -> list[float]:
    """Per message, the time from the start of the submission until Bob's IMAP client, waiting in IDLE
    (as Thunderbird, K-9 or a phone does), is told `* N EXISTS` and has fetched the message's Message-ID."""
    visible = []
    with smtplab.start() as lab:
        imap = lab.imap(RECIPIENT)
        try:
            imap.select("INBOX")
            for number in range(runs):
                began = time.perf_counter()
                result = lab.send(SENDER, RECIPIENT, f"benchmark {number}", "timing\n", wait=False)
                found = _idle_until_exists(imap, time.perf_counter() + IMAP_TIMEOUT)
                if found is None:
                    raise SystemExit(f"message {number} ({result.message_id}) not announced over IMAP "
                                     f"after {IMAP_TIMEOUT:g} s; queue: {lab.queue[-1]}")
                status, data = imap.fetch(str(found), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                if status != "OK" or result.message_id.encode() not in data[0][1]:
                    raise SystemExit(f"message {found} announced over IDLE is not {result.message_id}: {data!r}")
                visible.append(time.perf_counter() - began)
        finally:
            imap.logout()
    return visible


def machine() -> dict[str, object]:
    versions = {}
    for name in ("smtplab", "aiosmtpd", "pymap", "dnspython"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
    }


def table(results: dict[str, dict[str, float]], cold_ms: float) -> str:
    rows = [f"{'measure':32} {'n':>3} {'median':>8} {'min':>8} {'max':>8} {'IQR':>17} {'target':>8}"]
    labels = {
        "start": "lab start (start() -> ready)",
        "stop": "lab stop",
        "submit": "submit (send, wait=False)",
        "submit_to_imap": "submit -> IMAP IDLE push + FETCH",
        "submit_to_imap_poll": "submit -> IMAP NOOP+SEARCH poll",
    }
    for key, label in labels.items():
        s = results[key]
        target = f"<= {TARGETS_MS[key]:g}" if key in TARGETS_MS else ""
        iqr = f"{s['q1']:.1f} - {s['q3']:.1f}"
        rows.append(
            f"{label:32} {s['n']:>3} {s['median']:>8.1f} {s['min']:>8.1f} {s['max']:>8.1f} {iqr:>17} {target:>8}"
        )
    rows.append(f"(all times in ms; first start in this process, not counted above: {cold_ms:.1f} ms)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="labs to start and messages to send (default 20)")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=POLL_INTERVAL,
        metavar="SECONDS",
        help=f"pause between IMAP polls (default {POLL_INTERVAL:g})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).with_name("results.json"),
        help="where to write the JSON results (default benchmarks/results.json)",
    )
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be at least 2")

    cold, starts, stops = measure_start_stop(args.runs)
    pushed = measure_submit_to_idle(args.runs)
    submits, polled = measure_submit_to_imap(args.runs, args.poll_interval)
    results = {"start": stats(starts), "stop": stats(stops), "submit": stats(submits),
               "submit_to_imap": stats(pushed), "submit_to_imap_poll": stats(polled)}
    info = machine()

    print(
        f"smtplab benchmark: {args.runs} runs, Python {info['python']} on {info['platform']}, "
        f"{info['cpu_count']} CPUs; IMAP waits in IDLE, or polls every {args.poll_interval * 1000:g} ms"
    )
    print(table(results, cold * 1000))
    verdicts = {key: results[key]["median"] <= target for key, target in TARGETS_MS.items()}
    for key, ok in verdicts.items():
        print(
            f"target {key}: median {results[key]['median']:.1f} ms <= {TARGETS_MS[key]:g} ms: "
            f"{'met' if ok else 'MISSED'}"
        )

    args.output.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "runs": args.runs,
                "imap_poll_interval_ms": args.poll_interval * 1000,
                "machine": info,
                "unit": "ms",
                "targets_ms": TARGETS_MS,
                "targets_met": verdicts,
                "first_start_ms": cold * 1000,
                "results_ms": results,
                "samples_ms": {
                    "start": [s * 1000 for s in starts],
                    "stop": [s * 1000 for s in stops],
                    "submit": [s * 1000 for s in submits],
                    "submit_to_imap": [s * 1000 for s in pushed],
                    "submit_to_imap_poll": [s * 1000 for s in polled],
                },
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
