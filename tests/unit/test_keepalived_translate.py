"""keepalived model -> lvsd control requests: the startup table and reload diffs."""

from __future__ import annotations

import os

import pytest

from pylvs.control.api import handle
from pylvs.engine.engine import Engine
from pylvs.keepalived import load, loads
from pylvs.keepalived.translate import batch, build, diff, table

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "keepalived", "samples")
SVC = {"protocol": "tcp", "addr": "10.0.0.1", "port": 80}


def conf(text: str):
    return loads(text, echo=False)


def vs(body: str, head: str = "10.0.0.1 80", extra: str = "") -> str:
    return f"{extra}virtual_server {head} {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n{body}\n}}\n"


def rs(addr: str, body: str = "", port: int | None = 80) -> str:
    return f"real_server {addr} {port if port is not None else ''} {{\n{body}\n}}\n"


def dest(addr: str, port: int = 80, weight: int = 1, method: str = "masq", **kw) -> dict:
    return {"addr": addr, "port": port, "method": method, "weight": weight, "u_threshold": 0, "l_threshold": 0,
            "tun_type": "ipip", "tun_port": 0, "tun_flags": "nocsum", **kw}


def apply_all(requests: list[dict]) -> Engine:
    engine = Engine(routes=None)
    for req in requests:
        answer = handle(engine, req)
        assert answer["ok"], (req, answer)
    return engine


def listing(engine: Engine) -> dict:
    return {(s.get("fwmark") or (s["protocol"], s["addr"], s["port"])): sorted((d["addr"], d["port"], d["weight"])
                                                                              for d in s["dests"])
            for s in handle(engine, {"op": "list"})["result"]["services"]}


def test_sample_builds_a_table_lvsd_accepts():
    config = load(os.path.join(DATA, "keepalived.conf.sample"), echo=False)
    requests = build(config)
    assert requests[0] == {"op": "add-service", "service": {
        "protocol": "tcp", "addr": "10.10.10.2", "port": 1358, "scheduler": "rr", "flags": 1, "timeout": 50,
        "netmask": "255.255.255.255", "pe": ""}}
    assert requests[1:] == [
        {"op": "add-dest", "svc": {"protocol": "tcp", "addr": "10.10.10.2", "port": 1358},
         "dest": dest("192.168.200.2", 1358)},
        {"op": "add-dest", "svc": {"protocol": "tcp", "addr": "10.10.10.2", "port": 1358},
         "dest": dest("192.168.200.3", 1358)}]
    engine = apply_all(requests)
    assert listing(engine) == {("tcp", "10.10.10.2", 1358): [("192.168.200.2", 1358, 1), ("192.168.200.3", 1358, 1)]}
    # the same requests as one all-or-nothing batch
    assert handle(Engine(routes=None), batch(requests))["ok"]


def test_real_servers_start_up_unless_alpha():
    config = conf(vs(rs("10.0.1.1", "weight 2\nTCP_CHECK {\n}") + rs("10.0.1.2", "alpha\nTCP_CHECK {\n}") +
                     rs("10.0.1.3", "alpha\ninhibit_on_failure\nweight 5\nTCP_CHECK {\n}") +
                     rs("10.0.1.4", "alpha")))
    engine = apply_all(build(config))
    # no checker: always up, even with alpha; alpha + inhibit: present with weight 0
    assert listing(engine) == {("tcp", "10.0.0.1", 80): [("10.0.1.1", 80, 2), ("10.0.1.3", 80, 0),
                                                         ("10.0.1.4", 80, 1)]}


def test_alpha_with_sorry_server_starts_with_the_sorry_server():
    config = conf(vs("alpha\nsorry_server 10.0.9.9 80\n" + rs("10.0.1.1", "TCP_CHECK {\n}")))
    assert listing(apply_all(build(config))) == {("tcp", "10.0.0.1", 80): [("10.0.9.9", 80, 1)]}
    inhibited = conf(vs("sorry_server 10.0.9.9 80\nsorry_server_inhibit\n" + rs("10.0.1.1", "TCP_CHECK {\n}")))
    assert listing(apply_all(build(inhibited))) == {("tcp", "10.0.0.1", 80): [("10.0.1.1", 80, 1), ("10.0.9.9", 80, 0)]}


def test_quorum_down_at_start_puts_the_sorry_server_in_place_of_real_servers():
    config = conf(vs("quorum 3\nhysteresis 1\nsorry_server 10.0.9.9 80\n" + rs("10.0.1.1", "weight 3\nTCP_CHECK {\n}")))
    # quorum 3 + hysteresis 1 > 3: starts down, so the real server is not installed
    assert listing(apply_all(build(config))) == {("tcp", "10.0.0.1", 80): [("10.0.9.9", 80, 1)]}


def test_group_expands_into_one_service_per_address_and_fwmark():
    config = load(os.path.join(DATA, "keepalived.conf.virtual_server_group"), echo=False)
    requests = build(config)
    services = [r["service"] for r in requests if r["op"] == "add-service"]
    assert [s.get("fwmark") or (s["addr"], s["port"]) for s in services] == [
        ("10.0.0.1", 8080)] + [(f"192.168.200.{i}", 80) for i in range(3, 11)] + [1]
    assert all(s["flags"] == 1 and s["timeout"] == 50 for s in services)
    dests = [(r["svc"].get("fwmark") or r["svc"]["port"], r["dest"]["port"]) for r in requests if r["op"] == "add-dest"]
    assert dests[0] == (8080, 80) and len(dests) == 10
    apply_all(requests)


def test_group_real_server_without_port_takes_each_service_port():
    config = conf("virtual_server_group G {\n10.0.0.1 8080\n10.0.0.2 9090\n}\n" + vs(rs("10.0.1.1", "", None),
                                                                                       "group G"))
    assert [(r["svc"]["port"], r["dest"]["port"]) for r in build(config) if r["op"] == "add-dest"] == [(8080, 8080),
                                                                                                        (9090, 9090)]


def test_fwmark_and_dr_ports():
    config = load(os.path.join(DATA, "keepalived.conf.fwmark"), echo=False)
    requests = build(config)
    assert requests[0]["service"]["fwmark"] == 1 and requests[0]["service"]["flags"] == 1
    assert [r["dest"]["port"] for r in requests[1:]] == [0, 0]
    dr = load(os.path.join(DATA, "dr.conf"), echo=False)
    engine = apply_all(build(dr))
    assert listing(engine) == {("tcp", "192.168.200.16", 80): [("192.168.200.101", 80, 1), ("192.168.200.102", 80, 1)]}
    assert {d["method"] for s in handle(engine, {"op": "list"})["result"]["services"] for d in s["dests"]} == {"route"}


def test_service_flags_netmask_and_thresholds():
    config = conf("virtual_server 10.0.0.1 53 {\n lb_algo sh\n sh-port\n sh-fallback\n flag-3\n lb_kind NAT\n"
                  " protocol UDP\n ops\n persistence_granularity 255.255.255.0\n persistence_engine sip\n"
                  + rs("10.0.1.1", "uthreshold 100\nlthreshold 50", 53) + "}\n")
    service = build(config)[0]["service"]
    assert service["flags"] == 1 | 4 | 8 | 16 | 32 and service["netmask"] == "255.255.255.0"
    assert service["timeout"] == 360 and service["pe"] == "sip" and service["protocol"] == "udp"
    d = build(config)[1]["dest"]
    assert (d["u_threshold"], d["l_threshold"]) == (100, 50)
    apply_all(build(config))


def test_tunnel_and_fullnat_destinations():
    requests = build(load(os.path.join(DATA, "tun.conf"), echo=False))
    assert [r["dest"] for r in requests[1:]] == [
        dest("10.1.0.101", weight=2, method="tunnel"),
        dest("10.2.0.102", method="tunnel", tun_type="gue", tun_port=6080, tun_flags="csum")]
    fnat = build(load(os.path.join(DATA, "fnat-dpvs.conf"), echo=False))
    assert fnat[1]["dest"]["method"] == "fullnat" and fnat[1]["dest"]["weight"] == 100
    apply_all(fnat)


def test_lvs_flush_and_timeouts_come_first():
    config = conf("global_defs {\n lvs_flush\n lvs_timeouts tcp 900 udp 60\n}\n" + vs(rs("10.0.1.1")))
    requests = build(config)
    assert requests[:2] == [{"op": "flush"}, {"op": "set-timeout", "tcp": 900, "tcpfin": 0, "udp": 60}]
    apply_all(requests)


def test_table_view():
    config = conf(vs(rs("10.0.1.1", "weight 4")))
    ((key, (service, dests)),) = table(config).items()
    assert key == ("tcp", "10.0.0.1", 80) and service["scheduler"] == "rr"
    assert dests == {("10.0.1.1", 80): dest("10.0.1.1", weight=4)}


# -- reload ------------------------------------------------------------------------------------

BASE = vs(rs("10.0.1.1", "weight 1\nTCP_CHECK {\n}") + rs("10.0.1.2", "weight 2\nTCP_CHECK {\n}"))


def reload(old_text: str, new_text: str) -> list[dict]:
    old, new = conf(old_text), conf(new_text)
    requests = diff(old, new)
    # the diff applied after the old table gives exactly the new table
    engine = apply_all(build(old) + requests)
    assert listing(engine) == listing(apply_all(build(new)))
    return requests


def test_unchanged_configuration_needs_nothing():
    assert reload(BASE, BASE) == []


def test_weight_change_is_one_edit():
    assert reload(BASE, BASE.replace("weight 2", "weight 5")) == [
        {"op": "edit-dest", "svc": SVC, "dest": dest("10.0.1.2", weight=5)}]


def test_added_and_removed_real_servers():
    new = vs(rs("10.0.1.1", "weight 1\nTCP_CHECK {\n}") + rs("10.0.1.3", "weight 3\nTCP_CHECK {\n}"))
    assert reload(BASE, new) == [
        {"op": "del-dest", "svc": SVC, "dest": {"addr": "10.0.1.2", "port": 80}},
        {"op": "add-dest", "svc": SVC, "dest": dest("10.0.1.3", weight=3)}]


def test_service_parameter_change_is_an_edit_service():
    requests = reload(BASE, BASE.replace("lb_algo rr", "lb_algo wlc"))
    assert requests == [{"op": "edit-service", "service": {**SVC, "scheduler": "wlc", "flags": 0, "timeout": 0,
                                                           "netmask": "255.255.255.255", "pe": ""}}]


def test_removed_and_added_virtual_servers():
    other = vs(rs("10.0.2.1"), "10.0.0.2 443")
    requests = reload(BASE, other)
    assert requests[0] == {"op": "del-service", "svc": SVC}
    assert [r["op"] for r in requests[1:]] == ["add-service", "add-dest"]


def test_protocol_change_replaces_the_service():
    requests = reload(BASE, BASE.replace("protocol TCP", "protocol UDP"))
    assert [r["op"] for r in requests] == ["del-service", "add-service", "add-dest", "add-dest"]


def test_new_alpha_real_server_is_not_added_at_reload():
    new = vs(rs("10.0.1.1", "weight 1\nTCP_CHECK {\n}") + rs("10.0.1.2", "weight 2\nTCP_CHECK {\n}") +
             rs("10.0.1.3", "alpha\nTCP_CHECK {\n}") + rs("10.0.1.4", "alpha\ninhibit_on_failure\nTCP_CHECK {\n}"))
    assert reload(BASE, new) == [{"op": "add-dest", "svc": SVC, "dest": dest("10.0.1.4", weight=0)}]


def test_group_entry_changes():
    old = "virtual_server_group G {\n10.0.0.1 80\n10.0.0.2 80\n}\n" + vs(rs("10.0.1.1"), "group G")
    new = "virtual_server_group G {\n10.0.0.2 80\n10.0.0.3 80\n}\n" + vs(rs("10.0.1.1"), "group G")
    requests = reload(old, new)
    assert [(r["op"], (r.get("svc") or r.get("service"))["addr"]) for r in requests] == [
        ("del-service", "10.0.0.1"), ("add-service", "10.0.0.3"), ("add-dest", "10.0.0.3")]


def test_inhibit_toggle_and_method_change_are_edits():
    requests = reload(BASE, BASE.replace("weight 2", "weight 2\nuthreshold 10"))
    assert requests == [{"op": "edit-dest", "svc": SVC, "dest": dest("10.0.1.2", weight=2, u_threshold=10)}]


@pytest.mark.parametrize("sample", ["keepalived.conf.sample", "keepalived.conf.inhibit", "case-study-mixing.conf",
                                    "fnat-dpvs.conf", "keepalived.conf.virtual_server_group", "dr.conf"])
def test_samples_against_each_other(sample):
    base = load(os.path.join(DATA, sample), echo=False)
    other = load(os.path.join(DATA, "keepalived.conf.quorum"), echo=False)
    engine = apply_all(build(base) + diff(base, other))
    assert listing(engine) == listing(apply_all(build(other)))
    engine = apply_all(build(other) + diff(other, base))
    assert listing(engine) == listing(apply_all(build(base)))
