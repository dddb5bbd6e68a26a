"""The SYN proxy as operators set it: lvsadm -j/--synproxy (DPVS's ipvsadm), keepalived's syn_proxy, the
listings (only -S and --json show it; -L -n stays ipvsadm's), and lvsd's memory-pressure options."""

from __future__ import annotations

import json
import shlex

import pytest

from pylvs.cli.lvsd import parse_args
from pylvs.engine.engine import Engine
from pylvs.engine.hops import StaticRoutes
from pylvs.ipvsadm.args import ParseError, parse_command
from pylvs.keepalived import loads
from pylvs.keepalived.translate import build
from tests.unit.test_lvsadm_daemon import Direct, lvsadm


def parse(line: str):
    return parse_command(shlex.split(line), "lvsadm", False)


def test_lvsadm_option_spellings_and_errors():
    for line in ("-A -t 1.2.3.4:80 -s rr -j enable", "-A -t 1.2.3.4:80 --synproxy enable",
                 "-E -t 1.2.3.4:80 -j enable"):
        (req,) = parse(line).requests
        assert req["service"]["synproxy"] is True
    (req,) = parse("-A -t 1.2.3.4:80 -j disable").requests
    assert "synproxy" not in req["service"]
    with pytest.raises(ParseError, match="invalid synproxy `on'"):
        parse("-A -t 1.2.3.4:80 -j on")
    with pytest.raises(ParseError, match="unknown option"):
        parse("-a -t 1.2.3.4:80 -r 10.0.0.1 -j enable")
    with pytest.raises(ParseError, match="multiple 'synproxy' options"):
        parse("-A -t 1.2.3.4:80 -j enable -j enable")


def test_listing_stays_ipvsadms_save_and_json_carry_it():
    d = Direct()
    rules = "-A -t 203.0.113.100:80 -s rr -j enable\n-a -t 203.0.113.100:80 -r 192.0.2.11:8080 -m -w 1\n"
    assert lvsadm(d, "-R", stdin=rules)[0] == 0
    assert next(iter(d.engine.table)).synproxy
    listing = lvsadm(d, "-L", "-n")[1]
    assert "synproxy" not in listing and "-j" not in listing
    assert "TCP  203.0.113.100:80 rr\n" in listing
    saved = lvsadm(d, "-S", "-n")[1]
    assert saved.splitlines()[0] == "-A -t 203.0.113.100:80 -s rr -j enable"
    (svc,) = json.loads(lvsadm(d, "-L", "-n", "--json")[1])["services"]
    assert svc["synproxy"] is True
    assert lvsadm(d, "-E", "-t", "203.0.113.100:80", "-s", "rr")[0] == 0  # -E sets every field, as ipvsadm's
    assert not next(iter(d.engine.table)).synproxy


def test_keepalived_syn_proxy_reaches_the_service():
    config = loads("virtual_server 10.0.0.1 80 {\n lb_algo rr\n lb_kind NAT\n protocol TCP\n syn_proxy\n"
                   " real_server 10.0.0.2 80 {\n }\n}\n", echo=False)
    add_service = build(config)[0]
    assert add_service["op"] == "add-service" and add_service["service"]["synproxy"] is True
    plain = loads("virtual_server 10.0.0.1 80 {\n lb_kind NAT\n protocol TCP\n real_server 10.0.0.2 80 {\n }\n}\n",
                  echo=False)
    assert "synproxy" not in build(plain)[0]["service"]


def test_lvsd_defence_options_have_the_kernels_defaults():
    args = parse_args(["-i", "eth0"])
    assert (args.amemthresh, args.am_droprate, args.drop_entry, args.drop_packet, args.secure_tcp,
            args.max_conns) == (1024, 10, 0, 0, 0, 0)
    args = parse_args(["-i", "eth0", "--secure-tcp", "1", "--drop-packet", "3", "--max-conns", "5000"])
    assert (args.secure_tcp, args.drop_packet, args.max_conns) == (1, 3, 5000)
    with pytest.raises(SystemExit):
        parse_args(["-i", "eth0", "--drop-entry", "4"])


def test_engine_settings_build_the_defence():
    from pylvs.engine.engine import Settings

    e = Engine(StaticRoutes(), Settings(drop_packet=3, am_droprate=4, max_conns=7))
    assert e.defense.drop_rate == 4 and e.defense.max_conns == 7


def test_lvsd_refuses_negative_defence_values(capsys):
    from pylvs.cli.lvsd import main

    assert main(["-i", "eth0", "--max-conns", "-1"]) == 2
    assert "must not be negative" in capsys.readouterr().err
