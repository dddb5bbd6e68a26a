"""A small client for BIRD's control socket (what birdc speaks), with a timeout on every step.

Each reply line is a 4-digit code followed by '-' (more lines follow) or ' ' (the last line); a line
starting with a space continues the previous code. 0xxx are results, 1xxx table rows, 2xxx table
headings, 8xxx run-time errors, 9xxx parse errors.
"""

from __future__ import annotations

import socket

TIMEOUT = 2.0
MAX_REPLY = 1 << 20


class BirdError(OSError):
    pass


Reply = list[tuple[int, str]]  # (code, text) per line; continuation lines carry the code before them


def parse_reply(data: bytes) -> tuple[Reply, bool]:
    """The lines of `data` and whether the last complete line ends the reply."""
    lines: Reply = []
    code = 0
    done = False
    for raw in data.decode("utf-8", "replace").split("\n")[:-1]:
        if len(raw) >= 5 and raw[:4].isdigit() and raw[4] in " -":
            code = int(raw[:4])
            lines.append((code, raw[5:]))
            done = raw[4] == " "
        else:
            lines.append((code, raw[1:] if raw.startswith(" ") else raw))
            done = False
    return lines, done


class BirdControl:
    """One connection to BIRD's control socket; `command` sends a line and returns its reply."""

    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            self._read()  # the greeting: "0001 BIRD 2.0.12 ready."
        except BaseException:
            self.sock.close()
            raise

    def _read(self) -> Reply:
        data = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise BirdError("BIRD closed its control socket")
            data += chunk
            if len(data) > MAX_REPLY:
                raise BirdError("BIRD's reply is too long")
            if data.endswith(b"\n"):
                lines, done = parse_reply(data)
                if done:
                    return lines

    def command(self, line: str) -> Reply:
        self.sock.sendall(line.encode() + b"\n")
        reply = self._read()
        code, text = reply[-1]
        if code >= 8000:
            raise BirdError(f"BIRD: {line}: {text}")
        return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> BirdControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def protocol_details(reply: Reply) -> dict[str, str]:
    """`show protocols all NAME`: the 'Key: value' lines of its details (BGP state, Neighbor address,
    Hold timer, Routes, ...), keys as BIRD prints them."""
    details: dict[str, str] = {}
    for code, text in reply:
        if code == 1006 and ":" in text:
            key, _, value = text.strip().partition(":")
            details.setdefault(key.strip(), value.strip())
    return details


def protocol_rows(reply: Reply) -> dict[str, dict[str, str]]:
    """`show protocols`: name -> proto, table, state, since, info."""
    rows: dict[str, dict[str, str]] = {}
    for code, text in reply:
        if code == 1002:
            fields = text.split(None, 5)
            if len(fields) >= 5:
                rows[fields[0]] = {"proto": fields[1], "table": fields[2], "state": fields[3],
                                   "since": fields[4], "info": fields[5].strip() if len(fields) > 5 else ""}
    return rows
