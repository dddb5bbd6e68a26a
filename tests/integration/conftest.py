"""Integration tests need root and network namespaces. Without root they skip, except under CI
(CI=true), where a skip would hide a failure: there they fail instead."""

from __future__ import annotations

import os
import shutil

import pytest

from pylvs.lab.topology import NatLab
from tests.integration.labs import flushed, shared_lab

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NEEDED = ("ip", "nft", "nginx", "curl", "wrk", "tcpdump")


def missing_prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root"
    missing = [tool for tool in NEEDED if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}"))]
    if missing:
        return f"missing tools: {', '.join(missing)} (run: make deps)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = missing_prerequisites()
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    if IN_CI and any("integration" in rep.nodeid for rep in skipped):
        terminalreporter.write_line("CI: integration tests were skipped; treating the run as failed", red=True)
        config._pylvs_ci_skip = True


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if getattr(session.config, "_pylvs_ci_skip", False):
        session.exitstatus = 1


@pytest.fixture(scope="module")
def nat_lab():
    """One NAT lab with lvsd running, shared by a module's tests; each test flushes what it adds."""
    yield from shared_lab(NatLab())


@pytest.fixture
def lab(nat_lab):
    yield from flushed(nat_lab)


@pytest.fixture(scope="module")
def fast():
    """The fast path's program and maps loaded once for a module, nothing pinned (BPF_PROG_TEST_RUN tests;
    a module may define its own)."""
    from pylvs.datapath.bpf.loader import FastPath

    with FastPath(pin_root=None, max_flows=8192) as f:
        yield f
