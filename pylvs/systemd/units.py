"""The systemd units shipped with pylvs, filled in for the lvsd that prints them (`lvsd --print-unit`).

The files in this package carry `@LVSD@` where the command goes (pip may have put lvsd in
/usr/local/bin, a virtualenv or elsewhere) and `@HARDENING@` where the shared service settings go,
so both units run with the same sandbox.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources

UNITS = ("lvsd.service", "lvsd-keepalived@.service")


def lvsd_command() -> str:
    """The absolute command line of the running lvsd (its script, or `python -m` when run that way)."""
    argv0 = sys.argv[0]
    path = argv0 if os.sep in argv0 else shutil.which(argv0)
    if path and os.path.basename(path) == "lvsd":
        return os.path.abspath(path)
    return f"{sys.executable} -m pylvs.cli.lvsd"


def _text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text()


def render(name: str, command: str | None = None) -> str:
    if name not in UNITS:
        raise ValueError(f"no such unit: {name} (one of {', '.join(UNITS)})")
    text = _text(name).replace("@HARDENING@\n", _text("hardening.conf"))
    return text.replace("@LVSD@", command or lvsd_command())
