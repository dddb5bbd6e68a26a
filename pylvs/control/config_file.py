"""`lvsd --config FILE`: load an ipvsadm-save file at start and, if asked, keep it up to date.

The file is what `ipvsadm -S -n` (or `lvsadm -S -n`) writes, so it can be edited by hand, restored
with `lvsadm -R`, or taken from a host that ran the kernel's IPVS.
"""

from __future__ import annotations

import os
import tempfile

from pylvs.control import api
from pylvs.engine.engine import Engine
from pylvs.ipvsadm.format import Fmt, format_services
from pylvs.ipvsadm.rules import RuleError, rules_to_requests


class ConfigFileError(Exception):
    pass


def load(engine: Engine, path: str) -> int:
    """Apply the file's rules as one batch (all or nothing); returns the number of requests."""
    try:
        with open(path) as f:
            ops, op_lines = rules_to_requests(f, "lvsd")
    except OSError as exc:
        raise ConfigFileError(f"{path}: {exc.strerror}") from None
    except RuleError as err:
        raise ConfigFileError(f"{path}: {err}") from None
    answer = api.handle(engine, {"op": "batch", "ops": ops})
    if not answer["ok"]:
        index = answer.get("line")
        where = f"line {op_lines[index]}: " if isinstance(index, int) and 0 <= index < len(op_lines) else ""
        raise ConfigFileError(f"{path}: {where}{answer['error']}")
    return len(ops)


def render(engine: Engine) -> str:
    return format_services([api.encode_service(s) for s in engine.table], Fmt.RULE | Fmt.NUMERIC)


def save(engine: Engine, path: str) -> None:
    """Write the table in ipvsadm-save form, atomically (a crash never leaves half a file)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".lvsd-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(render(engine))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
