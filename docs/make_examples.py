"""Draw the example diagrams in docs/ from a real lab run, so that they show what the code draws today.

    python docs/make_examples.py

Alice writes to Bob while mx1.example.net (Bob's preferred MX) is down: the relay's attempt on mx1
fails, mx2 takes the message, and Bob reads it over IMAP. The script writes, next to itself:

- ladder-example.svg / .png / .txt: that message end to end (submission, MX lookup, the failed
  attempt, the relay, IMAP), compact as notebooks show it (handshakes, EHLO lists and DNS lookups
  folded), with one line per row as its text alternative;
- ladder-full-example.svg / .png / .txt: the same with `full=True`: every line, and the transcript;
- topology-example.svg / .png / .txt: the lab, with the message's path drawn on top.

PNG needs system Graphviz (`dot`); without it only the SVG and text files are written.
"""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import smtplab

HERE = Path(__file__).resolve().parent


def read_inbox(lab: smtplab.Lab, address: str) -> None:
    """Fetch every message like a mail client, and wait until the server has logged the whole session."""
    closed = threading.Event()
    opened: list[str] = []

    def listener(event: smtplab.TraceEvent) -> None:
        if event.protocol == "imap" and event.kind == "close" and event.conn in opened:
            closed.set()

    lab.trace.subscribe(listener)
    try:
        imap = lab.imap(address)
        opened.append([e.conn for e in lab.trace.events() if e.protocol == "imap"][-1])
        imap.select("INBOX")
        _, found = imap.search(None, "ALL")
        for number in found[0].split():
            imap.fetch(number, "(RFC822)")
        imap.logout()
        closed.wait(10)
    finally:
        lab.trace.unsubscribe(listener)


def main() -> int:
    scenario = smtplab.Scenario.default().to_dict()
    for provider in scenario["providers"]:  # fixed passwords: the examples change less from run to run
        provider["users"] = {address: address.split("@")[0] + "-lab-password" for address in provider["users"]}
    with smtplab.start(scenario) as lab:
        lab.host("mx1").down()
        sent = lab.send("alice@example.org", "bob@example.net", "Lunch?", "Hi Bob, lunch at noon?\n")
        read_inbox(lab, "bob@example.net")
        diagrams = {
            "ladder": lab.ladder(sent, title="One message end to end: alice@example.org to bob@example.net, "
                                             "while mx1.example.net is down"),
            "ladder-full": lab.ladder(sent, full=True, title="One message end to end, every line: alice@example.org "
                                                             "to bob@example.net, while mx1.example.net is down"),
            "topology": lab.topology(sent, title="The lab, and the path of Alice's message (mx1.example.net is down)"),
        }
        for kind, diagram in diagrams.items():
            for suffix in (".svg", ".txt") + ((".png",) if shutil.which("dot") else ()):
                path = diagram.save(HERE / f"{kind}-example{suffix}")
                print(f"wrote {path.relative_to(HERE.parent)}")
    if not shutil.which("dot"):
        print("no system Graphviz (dot): PNG files not written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
