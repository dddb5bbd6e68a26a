"""Record what the real `keepalived -t` says about each *.conf here (run from anywhere, as root).

    python tests/data/configtest/record.py     # writes keepalived-t.json next to this file

keepalived 2.2.7 (Debian 12) is the reference. Its parent, VRRP and checker processes each parse
the file, so a message may appear several times (the parent's without the file name): each is
kept once, in the order first seen. A crash is recorded as the negative signal number.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD = os.path.join(HERE, "keepalived-t.json")
MISSING = "no_such_file.conf"  # recorded too: what keepalived says about a file that is not there


def keepalived_version() -> str:
    out = subprocess.run(["keepalived", "--version"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).splitlines()[0].strip()


def keepalived_test(name: str) -> dict:
    """`keepalived -t -f NAME` from this directory: its exit status and its distinct messages."""
    out = subprocess.run(["keepalived", "-t", "-f", name], cwd=HERE, capture_output=True, text=True, timeout=30,
                         check=False)
    messages: list[str] = []
    for line in out.stderr.splitlines():
        if line.strip() and line not in messages:
            messages.append(line)
    return {"exit": out.returncode, "messages": messages}


def record() -> dict:
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(HERE, "*.conf"))) + [MISSING]
    return {"keepalived": keepalived_version(), "files": {name: keepalived_test(name) for name in names}}


if __name__ == "__main__":
    with open(RECORD, "w") as f:
        json.dump(record(), f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {RECORD}")
