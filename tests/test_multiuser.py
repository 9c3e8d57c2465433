"""A shared JupyterHub host: 20 labs in 20 processes at once, each with its own mail and nobody else's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ONE_LEARNER = r"""
import json, sys, secrets, smtplab
token = sys.argv[1]
lab = smtplab.start()
try:
    lab.send("alice@example.org", "bob@example.net", f"lab {token}", f"secret {token}")
    imap = lab.imap("bob@example.net")
    imap.select("INBOX")
    typ, data = imap.search(None, "ALL")
    subjects = []
    for number in data[0].split():
        raw = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1]
        subjects.append(raw.decode().strip())
    imap.logout()
    ports = sorted(p for h in lab.hosts.values() for p in h.ports.values())
    print(json.dumps({"token": token, "subjects": subjects, "ports": ports, "dns": lab.dns.port}))
finally:
    lab.stop()
"""


def test_twenty_labs_in_twenty_processes(tmp_path: Path) -> None:
    script = tmp_path / "learner.py"
    script.write_text(ONE_LEARNER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = [
        subprocess.Popen([sys.executable, str(script), f"t{i:02d}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for i in range(20)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    for result in results:
        assert result["subjects"] == [f"Subject: lab {result['token']}"], "each lab sees its own mail only"
    # A port conflict would have failed that lab's start: every process exited 0 above.
