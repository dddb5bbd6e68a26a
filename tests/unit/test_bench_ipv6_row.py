"""bench/run.py's IPv6 NAT row: the nftables6 and pylvs6 modes build their rules, URLs and counters for
IPv6, and the NAT table compares them (no lab here: the smoke run is `bench/run.py --modes nftables6,pylvs6`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench(request):
    sys.path.insert(0, str(BENCH))
    try:
        import loads
        import modes
        import report
        import run
        yield modes, report, run, loads
    finally:
        sys.path.remove(str(BENCH))


class FakeLab:
    """What the modes read from a BenchLab(ipv6=True), without namespaces."""

    ipv6 = True
    vip = "2001:db8:10::100"
    rport = 8080

    def __init__(self):
        self.kernel_vip = False

    def targets(self):
        return ["2001:db8:2::11", "2001:db8:2::12", "2001:db8:2::13"]

    def add_vip_to_kernel(self):
        self.kernel_vip = True

    def lvsd_stats(self):
        return {"[2001:db8:10::100]:80": (5, 10, 20, 300, 400), "[2001:db8:10::100]:5201": (2, 1, 1, 9, 9)}


def test_nftables6_dnats_in_an_ip6_table_over_the_ipv6_real_servers(bench, monkeypatch):
    modes = bench[0]
    scripts = []
    monkeypatch.setattr(modes, "_nft", lambda lab, script: scripts.append(script))
    lab = FakeLab()
    mode = modes.Nftables6Mode()
    mode.setup(lab)
    (script,) = scripts
    assert lab.kernel_vip and "table ip6 bench" in script
    assert ("ip6 daddr 2001:db8:10::100 tcp dport 80 counter dnat to numgen inc mod 3 map "
            "{ 0 : 2001:db8:2::11, 1 : 2001:db8:2::12, 2 : 2001:db8:2::13 } : 8080") in script.replace("\\\n", "")
    assert "dnat to [2001:db8:2::11]:5201" in script
    assert mode.http_url(lab) == "http://[2001:db8:10::100]/"
    assert mode.iperf_target(lab) == ("2001:db8:10::100", 5201)
    assert mode.peers(lab) == ["2001:db8:10::10"]


def test_pylvs6_reads_the_ipv6_services_counters(bench):
    modes = bench[0]
    assert modes.Pylvs6Mode().counters(FakeLab()) == {
        "http_conns": 5, "http_pkts": 30, "http_bytes": 700, "iperf_conns": 2, "iperf_pkts": 2, "iperf_bytes": 18}


def test_the_nat_table_puts_the_ipv6_row_beside_the_ipv4_one(bench):
    _, report, run, loads = bench
    args = run.parse_args(["--quick", "--modes", "nftables6,pylvs6"])
    assert [cls.name for cls in args.mode_classes] == ["nftables6", "pylvs6"]
    assert "nftables6" in run.parse_args([]).modes.split(",")  # in the default run too
    runs = {name: report.ModeRun(name) for name in ("nftables6", "pylvs6")}
    for name, rps in (("nftables6", 1000.0), ("pylvs6", 400.0)):
        runs[name].wrk_keepalive = loads.WrkResult("http://[2001:db8:10::100]/", True, int(rps), 1.0, rps,
                                                   1.0, 2.0, 3.0, 4.0, {})
    row = report.metrics_table(runs)["HTTP keep-alive (req/s)"]
    assert (row["nftables6"], row["pylvs6"], row["pylvs6/nft6"]) == (1000.0, 400.0, 0.4)
