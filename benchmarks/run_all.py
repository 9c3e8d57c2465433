"""Run every smtplab benchmark, print one table, and write benchmarks/results.json.

    python benchmarks/run_all.py              # everything (a few minutes)
    python benchmarks/run_all.py --quick      # fewer rounds and messages, for a first look
    python benchmarks/run_all.py --skip notebooks --skip memory

Measures, side by side in one run (see README.md for how each is taken):
- lab start/stop, submit, submit -> visible over IMAP: IDLE push, and polling (bench_lab.py); the first
  start in fresh processes;
- MX intake: one load client (loadgen.py) against a bare aiosmtpd server, aiosmtpd with its Maildir
  handler, the lab's MX (default lab; security checks off; checks off with the mailboxes on tmpfs) and
  Postfix's smtp-sink, each in its own process, in alternating rounds; the lab/bare ratios per round;
  the CPU one Maildir delivery costs on disk and on tmpfs;
- relay throughput: 50 clients submit over STARTTLS + AUTH, the relay carries every message to the
  MX, which writes it to a Maildir; messages per second end to end (default lab and checks off);
- memory: RSS a lab adds in a fresh interpreter, the RSS of its libraries alone, RSS, PSS and USS of 30
  labs in 30 processes, and what a lab adds to each of 30 running Jupyter kernels;
- the course: every notebooks/*.ipynb executed top to bottom with nbclient.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # bench_lab, next to this file

import bench_lab  # noqa: E402
from serve import plain_scenario  # noqa: E402

import smtplab  # noqa: E402

TARGETS = {
    "start_ms": 150.0,  # median, at most
    "submit_to_imap_ms": 60.0,  # median, at most
    "intake_ratio": 0.8,  # lab MX / bare aiosmtpd, at least
    "memory_per_lab_mb": 40.0,  # RSS per lab with 30 labs in 30 processes, at most
    "notebooks_s": 60.0,  # the whole course, at most
}
INTAKE_SERVERS = ("bare", "maildir", "durable", "lab-tmpfs", "lab-plain", "lab", "sink")


# --- the first start in a fresh process ------------------------------------------------------------

FIRST_START = r"""
import time
import smtplab
began = time.perf_counter()
lab = smtplab.start()
print(time.perf_counter() - began)
lab.stop()
"""


def measure_first_start(processes: int) -> dict[str, Any]:
    """What a learner waits for at the first `smtplab.start()` of a kernel: fresh processes, `import smtplab`
    done (not counted), then one start to ready. The lab's DKIM keys are made then (random, 25-200 ms each)."""
    times = []
    for _ in range(processes):
        done = subprocess.run([sys.executable, "-c", FIRST_START], capture_output=True, text=True, timeout=120,
                              cwd=ROOT, check=True)
        times.append(float(done.stdout.split()[0]) * 1000)
    return {"processes": processes, "median_ms": statistics.median(times), "ms": times}


# --- MX intake -------------------------------------------------------------------------------------

def start_server(kind: str) -> tuple[subprocess.Popen[str], str, int, int] | None:
    server = subprocess.Popen([sys.executable, str(HERE / "serve.py"), kind], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert server.stdout is not None
    line = server.stdout.readline().split()
    if not line or line[0] != "READY":
        stop_server(server)
        return None
    return server, line[1], int(line[2]), int(line[3])


def stop_server(server: subprocess.Popen[str]) -> None:
    assert server.stdin is not None
    server.stdin.close()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def intake_round(kind: str, messages: int, sessions: int) -> dict[str, float] | None:
    started = start_server(kind)
    if started is None:
        return None
    server, address, port, pid = started
    try:
        cpu_before = cpu_seconds(pid)
        done = subprocess.run([sys.executable, str(HERE / "loadgen.py"), address, str(port), "--messages",
                               str(messages), "--sessions", str(sessions)], capture_output=True, text=True,
                              timeout=900)
        cpu = cpu_seconds(pid) - cpu_before
        result = json.loads(done.stdout)
        if "error" in result:
            raise RuntimeError(f"{kind}: {result['error']}")
        return {"per_second": result["per_second"], "cpu_us_per_message": cpu / result["messages"] * 1e6}
    finally:
        stop_server(server)
        # Flush what this server wrote and deleted before the next one starts: on this machine's ext4,
        # creating a file soon after thousands were created or deleted cost up to ~0.8 ms of CPU instead
        # of ~10 us (measured), which would charge one server for the one before it.
        os.sync()


def storage_cost(directory: str | None, messages: int = 300) -> float:
    """CPU microseconds for one Maildir delivery as the lab's MX does it (write, fsync, rename, fsync the
    folder), in a fresh folder under `directory` (None: where the lab puts its own by default)."""
    import shutil
    import tempfile

    from smtplab.mail.store import MailStore

    folder = tempfile.mkdtemp(prefix="bench-store-", dir=directory)
    try:
        store = MailStore(Path(folder), "example.net")
        store.add_user("bob@example.net")
        message = b"Subject: load\r\n\r\n" + b"x" * 76 * 13
        began = time.process_time()
        for _ in range(messages):
            store.deliver("bob@example.net", message)
        return (time.process_time() - began) / messages * 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.sync()


def measure_intake(rounds: int, messages: int, sessions: int) -> dict[str, Any]:
    """Alternate the servers round by round, so they share whatever else the machine is doing."""
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in INTAKE_SERVERS}
    installed = {kind: True for kind in INTAKE_SERVERS}
    storage: dict[str, list[float]] = {"disk": [], "tmpfs": []}
    for number in range(rounds):
        storage["disk"].append(storage_cost(None))
        if os.path.isdir("/dev/shm"):
            storage["tmpfs"].append(storage_cost("/dev/shm"))
        for kind in INTAKE_SERVERS:
            if not installed[kind]:
                continue
            result = intake_round(kind, messages, sessions)
            if result is None:
                installed[kind] = False
                continue
            samples[kind].append(result)
            print(f"  intake round {number + 1}/{rounds} {kind:8} {result['per_second']:8.0f} msg/s "
                  f"{result['cpu_us_per_message']:8.0f} us CPU/msg", flush=True)
    out: dict[str, Any] = {"messages": messages, "sessions": sessions, "rounds": rounds, "servers": {},
                           "storage_cpu_us": {k: statistics.median(v) for k, v in storage.items() if v}}
    for kind in INTAKE_SERVERS:
        if not samples[kind]:
            out["servers"][kind] = "not installed"
            continue
        rates = [s["per_second"] for s in samples[kind]]
        cpu = [s["cpu_us_per_message"] for s in samples[kind]]
        out["servers"][kind] = {"per_second_median": statistics.median(rates), "per_second": rates,
                                "cpu_us_per_message_median": statistics.median(cpu), "cpu_us_per_message": cpu}
    # Each ratio is taken within a round (the servers ran a few seconds apart), then the median over rounds:
    # the machine's speed drifts more between rounds than within one.
    for kind in ("lab", "lab-plain", "lab-tmpfs"):
        if not samples[kind]:
            continue
        key = kind.replace("-", "_")
        for base, name in (("bare", "bare"), ("maildir", "aiosmtpd_maildir"), ("durable", "aiosmtpd_durable")):
            ratios = [s["per_second"] / b["per_second"] for s, b in zip(samples[kind], samples[base], strict=True)]
            out[f"ratio_{key}_to_{name}"] = statistics.median(ratios)
            out[f"ratio_{key}_to_{name}_range"] = [min(ratios), max(ratios)]
    return out


# --- relay throughput ------------------------------------------------------------------------------

def measure_relay(clients: int, per_client: int, scenario: dict[str, Any] | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_load import CLIENT_PROGRAM  # the same submission clients as the load test

    with smtplab.start(scenario) as lab:
        host = lab.host("smtp.example.org")
        args = [host.address, str(host.ports["submission"]), lab.users["alice@example.org"].password, lab.ca_file,
                str(clients), str(per_client)]
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CLIENT_PROGRAM, *args], capture_output=True, text=True,
                              timeout=900)
        submitted = time.perf_counter() - began
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        assert lab.wait_for_delivery(timeout=900)
        total = time.perf_counter() - began
        delivered = sum(r.state == "delivered" for item in lab.queue for r in item.recipients)
    messages = clients * per_client
    return {"clients": clients, "messages": messages, "delivered": delivered, "submit_seconds": submitted,
            "end_to_end_seconds": total, "submitted_per_second": messages / submitted,
            "delivered_per_second": delivered / total}


# --- memory ----------------------------------------------------------------------------------------

MEMORY_PROBE = r"""
import os, sys, psutil
me = psutil.Process()
def rss(): return me.memory_info().rss
bare = rss()
import smtplab
imported = rss()
lab = smtplab.start()
started = rss()
lab.send("alice@example.org", "bob@example.net", "memory", "one message through the whole lab")
imap = lab.imap("bob@example.net"); imap.select("INBOX"); imap.logout()
used = rss()
if sys.argv[1] == "report":
    print(bare, imported, started, used, flush=True)
    lab.stop()
else:
    print("READY", flush=True)
    sys.stdin.read()
    lab.stop()
"""


# The libraries a running lab loads (its mail servers, DNS, TLS, DKIM/SPF/DMARC), without smtplab itself:
# the floor under any lab built on them.
LIBRARIES_PROBE = r"""
import psutil
me = psutil.Process()
bare = me.memory_info().rss
import asyncio, ssl, smtplib, imaplib, email.parser, email.policy, mailbox
import aiosmtpd.smtp, pymap.backend.maildir, pymap.imap, dns.resolver, dns.asyncresolver, dns.zone
import trustme, dkim, spf, authheaders
print(bare, me.memory_info().rss)
"""


def measure_memory(labs: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, "report"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    bare, imported, started, used = (int(x) for x in done.stdout.split())
    floor = subprocess.run([sys.executable, "-c", LIBRARIES_PROBE], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
    libraries = int(floor.stdout.split()[1])
    mb = 1024 * 1024
    one = {"interpreter_mb": bare / mb, "import_adds_mb": (imported - bare) / mb,
           "start_adds_mb": (started - imported) / mb, "after_one_message_mb": used / mb,
           "lab_adds_mb": (used - imported) / mb, "libraries_alone_mb": libraries / mb}

    processes = [subprocess.Popen([sys.executable, "-c", MEMORY_PROBE, "hold"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(labs)]
    try:
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "READY":
                raise RuntimeError("a lab process did not start")
        infos = [psutil.Process(p.pid).memory_full_info() for p in processes]
    finally:
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in processes:
            process.wait(60)
    rss = sum(i.rss for i in infos)
    pss = sum(getattr(i, "pss", i.rss) for i in infos)
    uss = sum(getattr(i, "uss", i.rss) for i in infos)
    many = {"labs": labs, "rss_total_mb": rss / mb, "rss_per_lab_mb": rss / labs / mb,
            "pss_per_lab_mb": pss / labs / mb, "uss_per_lab_mb": uss / labs / mb}
    return {"one_lab": one, "many_labs": many}


KERNEL_LAB = """
import smtplab
lab = smtplab.start()
lab.send("alice@example.org", "bob@example.net", "memory", "one message through the whole lab")
imap = lab.imap("bob@example.net"); imap.select("INBOX"); imap.logout()
"""


def measure_kernel_memory(kernels: int) -> dict[str, Any]:
    """What a lab adds to the Jupyter kernels learners run it in: `kernels` IPython kernels held together,
    each measured before and after it starts a lab and sends one message (RSS, PSS, USS per kernel)."""
    from jupyter_client.manager import start_new_kernel

    managers, clients = [], []
    mb = 1024 * 1024
    try:
        for _ in range(kernels):
            # The kernel's own stderr (a warning about its local TCP ports) would drown the table.
            manager, client = start_new_kernel(kernel_name="python3", cwd=str(ROOT), stderr=subprocess.DEVNULL)
            managers.append(manager)
            clients.append(client)
        processes = [psutil.Process(m.provisioner.process.pid) for m in managers]
        before = [p.memory_full_info() for p in processes]
        for client in clients:
            reply = client.execute_interactive(KERNEL_LAB, timeout=120, output_hook=lambda msg: None)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"a kernel could not start a lab: {reply['content']}")
        after = [p.memory_full_info() for p in processes]
    finally:
        for client in clients:
            client.stop_channels()
        for manager in managers:
            manager.shutdown_kernel(now=True)

    def added(field: str) -> float:
        return sum(getattr(a, field) - getattr(b, field) for a, b in zip(after, before, strict=True)) / kernels / mb

    return {"kernels": kernels, "kernel_rss_before_mb": sum(b.rss for b in before) / kernels / mb,
            "rss_added_per_lab_mb": added("rss"), "pss_added_per_lab_mb": added("pss"),
            "uss_added_per_lab_mb": added("uss")}


# --- notebooks -------------------------------------------------------------------------------------

def measure_notebooks() -> dict[str, Any]:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    results: dict[str, Any] = {}
    began = time.perf_counter()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        error = ""
        try:
            client.execute()
        except CellExecutionError as exc:
            error = str(exc).splitlines()[0][:200]
        results[path.name] = {"seconds": time.perf_counter() - start, "error": error}
        print(f"  {path.name:32} {results[path.name]['seconds']:6.1f} s {error}", flush=True)
    return {"notebooks": results, "total_seconds": time.perf_counter() - began,
            "failed": [name for name, r in results.items() if r["error"]]}


# --- the table -------------------------------------------------------------------------------------

def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, value, target, verdict) for the one table."""
    out: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lab = results.get("lab")
    if lab:
        r = lab["results_ms"]
        out.append(("lab start, median (IQR)", f"{r['start']['median']:.1f} ms ({r['start']['q1']:.1f}-"
                    f"{r['start']['q3']:.1f})", "<= 150 ms", verdict(r["start"]["median"] <= TARGETS["start_ms"])))
        first = results.get("first_start")
        if first:
            out.append((f"lab start, first in a fresh process, median of {first['processes']}",
                        f"{first['median_ms']:.1f} ms ({min(first['ms']):.0f}-{max(first['ms']):.0f})", "<= 150 ms",
                        verdict(first["median_ms"] <= TARGETS["start_ms"])))
        out.append(("lab stop, median", f"{r['stop']['median']:.1f} ms", "", ""))
        out.append(("submit (STARTTLS + AUTH), median", f"{r['submit']['median']:.1f} ms", "", ""))
        out.append(("submit -> visible over IMAP (IDLE push + FETCH), median", f"{r['submit_to_imap']['median']:.1f} ms",
                    "<= 60 ms", verdict(r["submit_to_imap"]["median"] <= TARGETS["submit_to_imap_ms"])))
        if "submit_to_imap_poll" in r:
            out.append(("submit -> seen by polling (NOOP+SEARCH every 2 ms), median",
                        f"{r['submit_to_imap_poll']['median']:.1f} ms", "", ""))
    intake = results.get("intake")
    if intake:
        for kind, label in (("bare", "bare aiosmtpd (drops mail)"), ("maildir", "aiosmtpd + its Maildir handler"),
                            ("durable", "aiosmtpd + fsync'd Maildir, as the lab stores (a thread per write)"),
                            ("lab-tmpfs", "lab MX, checks off, mailboxes on tmpfs"),
                            ("lab-plain", "lab MX, security checks off"), ("lab", "lab MX, default (SPF/DKIM/DMARC...)"),
                            ("sink", "Postfix smtp-sink (C)")):
            server = intake["servers"].get(kind)
            if server is None:  # results from before this server was measured
                continue
            value = "not installed" if server == "not installed" else (
                f"{server['per_second_median']:.0f} msg/s, {server['cpu_us_per_message_median']:.0f} us CPU/msg")
            out.append((f"MX intake: {label}", value, "", ""))
        for kind, label in (("lab_tmpfs", "lab MX (checks off, tmpfs)"), ("lab_plain", "lab MX (checks off)"),
                            ("lab", "lab MX (default)")):
            if f"ratio_{kind}_to_bare" not in intake:
                continue
            ratio = intake[f"ratio_{kind}_to_bare"]
            low, high = intake.get(f"ratio_{kind}_to_bare_range", (ratio, ratio))
            durable = intake.get(f"ratio_{kind}_to_aiosmtpd_durable")
            out.append((f"MX intake ratio {label} / bare aiosmtpd, median of rounds (range)",
                        f"{ratio:.2f} ({low:.2f}-{high:.2f}; / aiosmtpd + Maildir: "
                        f"{intake[f'ratio_{kind}_to_aiosmtpd_maildir']:.2f}"
                        + (f"; / aiosmtpd + fsync'd Maildir: {durable:.2f})" if durable is not None else ")"),
                        ">= 0.8", verdict(ratio >= 0.8)))
        storage = intake.get("storage_cpu_us")
        if storage:
            out.append(("storage: one Maildir delivery (write, fsync, rename, fsync folder), CPU",
                        f"{storage['disk']:.0f} us on disk" + (f", {storage['tmpfs']:.0f} us on tmpfs"
                                                                if "tmpfs" in storage else ""), "", ""))
    for key, label in (("relay_plain", "checks off"), ("relay", "default")):
        relay = results.get(key)
        if relay:
            out.append((f"relay ({label}): {relay['messages']} msgs, submission -> MX -> Maildir",
                        f"{relay['delivered_per_second']:.0f} msg/s ({relay['submitted_per_second']:.0f} msg/s "
                        "submitted)", "", ""))
    memory = results.get("memory")
    if memory:
        one, many = memory["one_lab"], memory["many_labs"]
        out.append(("memory: RSS a lab adds (fresh interpreter)",
                    f"{one['lab_adds_mb']:.1f} MB (+{one['import_adds_mb']:.1f} MB imports)", "", ""))
        per_lab = many["rss_per_lab_mb"]
        out.append((f"memory: {many['labs']} labs in {many['labs']} processes, per lab",
                    f"RSS {per_lab:.1f} MB, PSS {many['pss_per_lab_mb']:.1f}, USS {many['uss_per_lab_mb']:.1f}",
                    "<= 40 MB", verdict(per_lab <= TARGETS["memory_per_lab_mb"])))
        if "libraries_alone_mb" in one:
            floor = one["libraries_alone_mb"]
            out.append(("memory: its libraries alone in a fresh interpreter (aiosmtpd, pymap, dnspython, "
                        "cryptography, dkimpy...; no smtplab)", f"RSS {floor:.1f} MB (interpreter "
                        f"{one['interpreter_mb']:.1f})", "", ""))
            out.append(("memory: per lab process, over those libraries (smtplab + a running lab)",
                        f"RSS {per_lab - floor:.1f} MB", "", ""))
        kernel = memory.get("kernels")
        if kernel:
            added = kernel["rss_added_per_lab_mb"]
            out.append((f"memory: a lab in each of {kernel['kernels']} Jupyter kernels, added per kernel",
                        f"RSS {added:.1f} MB, PSS {kernel['pss_added_per_lab_mb']:.1f}, USS "
                        f"{kernel['uss_added_per_lab_mb']:.1f} (kernel alone {kernel['kernel_rss_before_mb']:.0f})",
                        "<= 40 MB", verdict(added <= TARGETS["memory_per_lab_mb"])))
    notebooks = results.get("notebooks")
    if notebooks:
        failed = f", {len(notebooks['failed'])} failed" if notebooks["failed"] else ""
        out.append((f"course: {len(notebooks['notebooks'])} notebooks executed (nbclient)",
                    f"{notebooks['total_seconds']:.1f} s{failed}", "<= 60 s",
                    verdict(notebooks["total_seconds"] <= TARGETS["notebooks_s"] and not notebooks["failed"])))
    return out


def table(results: dict[str, Any]) -> str:
    body = rows(results)
    widths = [max(len(r[i]) for r in body + [("measure", "value", "target", "")]) for i in range(4)]
    line = "  ".join(f"{{:{w}}}" for w in widths)
    text = [line.format("measure", "value", "target", ""), line.format(*("-" * w for w in widths))]
    text += [line.format(*r) for r in body]
    return "\n".join(t.rstrip() for t in text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and messages")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["lab", "intake", "relay", "memory", "notebooks"], help="leave a part out")
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    quick = args.quick
    results: dict[str, Any] = {}
    began = time.perf_counter()

    if "lab" not in args.skip:
        print("lab start/stop and submit -> IMAP ...", flush=True)
        runs = 10 if quick else 20
        cold, starts, stops = bench_lab.measure_start_stop(runs)
        pushed = bench_lab.measure_submit_to_idle(runs)
        submits, polled = bench_lab.measure_submit_to_imap(runs, bench_lab.POLL_INTERVAL)
        results["lab"] = {"runs": runs, "first_start_ms": cold * 1000, "results_ms": {
            "start": bench_lab.stats(starts), "stop": bench_lab.stats(stops), "submit": bench_lab.stats(submits),
            "submit_to_imap": bench_lab.stats(pushed), "submit_to_imap_poll": bench_lab.stats(polled)}}
        results["first_start"] = measure_first_start(5 if quick else 9)
    if "intake" not in args.skip:
        print("MX intake ...", flush=True)
        results["intake"] = measure_intake(rounds=2 if quick else 5, messages=1000 if quick else 3000, sessions=20)
    if "relay" not in args.skip:
        print("relay throughput ...", flush=True)
        results["relay_plain"] = measure_relay(clients=50, per_client=10 if quick else 40, scenario=plain_scenario())
        results["relay"] = measure_relay(clients=50, per_client=10 if quick else 40)
    if "memory" not in args.skip:
        print("memory ...", flush=True)
        results["memory"] = measure_memory(labs=10 if quick else 30)
        results["memory"]["kernels"] = measure_kernel_memory(kernels=5 if quick else 30)
    if "notebooks" not in args.skip:
        print("notebooks ...", flush=True)
        results["notebooks"] = measure_notebooks()

    info = bench_lab.machine()
    info["load_average"] = list(os.getloadavg())
    info["memory_total_mb"] = psutil.virtual_memory().total / 1024 / 1024
    print()
    print(f"smtplab benchmarks: Python {info['python']} on {info['platform']}, {info['cpu_count']} CPUs, "
          f"load average {info['load_average'][0]:.1f}; {time.perf_counter() - began:.0f} s")
    print(table(results))
    document = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": info, "quick": quick,
                "targets": TARGETS, "table": [dict(zip(("measure", "value", "target", "verdict"), r, strict=True))
                                              for r in rows(results)], **results}
    args.output.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
