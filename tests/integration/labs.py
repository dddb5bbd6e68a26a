"""Helpers the integration modules share: running labs as fixtures, simple clients."""

from __future__ import annotations

import re


def shared_lab(lab, *lvsd_args: str):
    """Build a lab and start lvsd (with `lvsd_args`) for a module's tests; always torn down, and nothing may
    be left."""
    try:
        lab.up()
        lab.start_lvsd(*lvsd_args)
        yield lab
    finally:
        lab.down()
        assert lab.net.leftovers() == []


def flushed(lab):
    """A shared lab for one test, whose services are removed afterwards."""
    yield lab
    if lab.lvsd is not None and lab.lvsd.poll() is None:
        lab.lvsadm("-C")


def http_get_all(lab, n: int, url: str) -> list[str]:
    """n requests with curl; the answers (each real server answers its own name)."""
    answers = []
    for _ in range(n):
        r = lab.curl(url)
        assert r.returncode == 0, (r.stderr, lab.lvsd_log()[-1000:])
        answers.append(r.stdout.strip())
    return answers


def wrk_spread(lab, url: str, connections: int = 12, seconds: int = 2) -> tuple[int, list[int]]:
    """A keep-alive wrk run that must see no errors: (requests wrk completed, requests per real server)."""
    before = {n: len(lab.access_log(n)) for n in lab.rs_names}
    r = lab.net.exec("client", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url, timeout=30)
    assert "Socket errors" not in r.stdout and "Non-2xx" not in r.stdout, r.stdout
    total = int(re.search(r"(\d+) requests in", r.stdout).group(1))
    return total, [len(lab.access_log(n)) - before[n] for n in lab.rs_names]
