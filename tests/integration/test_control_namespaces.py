"""The control socket is per network namespace: two lvsd with the default socket in two namespaces
each keep their own, `ip netns exec X lvsadm` reaches the lvsd of X, and a live socket (abstract or
file) is never taken over by a second lvsd (issue 10, item 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pylvs.lab.netns import LabError, Netns, wait_for

VIPS = {"a": "203.0.113.1", "b": "203.0.113.2"}


def lvsadm(net: Netns, role: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYLVS_CONTROL"}
    result = subprocess.run(["ip", "netns", "exec", net.name(role), sys.executable, "-m", "pylvs.cli.lvsadm", *args],
                            capture_output=True, text=True, timeout=30, env=env)
    if check and result.returncode:
        raise LabError(f"lvsadm {' '.join(args)} in {role}: {result.stderr.strip()}")
    return result


def start_lvsd(net: Netns, role: str, *extra: str, log: str) -> subprocess.Popen:
    return net.popen(role, sys.executable, "-m", "pylvs.cli.lvsd", "-i", "e0", *extra, log=log)


def log_of(net: Netns, name: str) -> str:
    with open(os.path.join(net.tmp, name)) as f:
        return f.read()


def wait_answering(net: Netns, role: str, proc: subprocess.Popen, *control: str) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise LabError(f"lvsd in {role} exited")
        return lvsadm(net, role, *control, "-Ln", check=False).returncode == 0

    wait_for(up, timeout=20, what=f"lvsd in {role}")


def listing(net: Netns, role: str, *control: str) -> str:
    return lvsadm(net, role, *control, "-Ln").stdout


@pytest.fixture
def two_namespaces():
    net = Netns()
    try:
        for role in ("a", "b"):
            net.add(role)
            net.ip(role, "link", "add", "e0", "type", "veth", "peer", "name", "e1")
            net.ip(role, "link", "set", "e0", "up")
            net.ip(role, "link", "set", "e1", "up")
        yield net
    finally:
        net.teardown()
        assert net.leftovers() == []


def test_default_socket_belongs_to_the_namespace(two_namespaces):
    net = two_namespaces
    procs = {role: start_lvsd(net, role, log=f"lvsd-{role}.log") for role in ("a", "b")}
    for role, proc in procs.items():
        wait_answering(net, role, proc)
    for role, vip in VIPS.items():
        lvsadm(net, role, "-A", "-t", f"{vip}:80", "-s", "rr")
    for role, vip in VIPS.items():
        other = VIPS["b" if role == "a" else "a"]
        text = listing(net, role)
        assert f"{vip}:80" in text and other not in text, (role, text)

    # A second lvsd in namespace a refuses to start and disturbs nothing of the first.
    second = start_lvsd(net, "a", log="lvsd-a2.log")
    assert second.wait(20) == 1
    assert "another lvsd is running in this network namespace" in log_of(net, "lvsd-a2.log")
    assert f"{VIPS['a']}:80" in listing(net, "a")
    vips_set = net.exec("a", "nft", "list", "set", "inet", "pylvs", "vips").stdout
    assert VIPS["a"] in vips_set  # its steering rules were left alone
    assert procs["a"].poll() is None and procs["b"].poll() is None


def test_socket_file_is_never_taken_over_while_it_answers(two_namespaces):
    net = two_namespaces
    path = os.path.join(net.tmp, "ctl.sock")
    first = start_lvsd(net, "a", "--control", path, log="lvsd-a.log")
    wait_answering(net, "a", first, "--control", path)
    lvsadm(net, "a", "--control", path, "-A", "-t", f"{VIPS['a']}:80", "-s", "rr")

    # Same file from another namespace (a file path is not scoped): refused, the file stays.
    intruder = start_lvsd(net, "b", "--control", path, log="lvsd-b.log")
    assert intruder.wait(20) == 1
    assert f"another lvsd answers on {path}" in log_of(net, "lvsd-b.log")
    assert f"{VIPS['a']}:80" in listing(net, "a", "--control", path)
    assert lvsadm(net, "a", "-Ln", check=False).returncode == 2  # the default socket is not in use

    # A killed lvsd leaves a stale file, which the next start replaces.
    net.kill(first, signal.SIGKILL)
    assert os.path.exists(path)
    again = start_lvsd(net, "b", "--control", path, log="lvsd-b2.log")
    wait_answering(net, "b", again, "--control", path)
    assert VIPS["a"] not in listing(net, "b", "--control", path)
