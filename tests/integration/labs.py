"""Helpers the integration modules share: running labs as fixtures, simple clients."""

from __future__ import annotations


def shared_lab(lab):
    """Build a lab and start lvsd for a module's tests; always torn down, and nothing may be left."""
    try:
        lab.up()
        lab.start_lvsd()
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
