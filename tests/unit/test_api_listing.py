"""`list-conns` built in pieces (what lvsd streams) says exactly what the one-piece answer says."""

from __future__ import annotations

import json

from scapy.layers.inet import TCP

from pylvs.control import api
from tests.unit.director import frame, from_client, make_engine


def test_pieces_join_into_the_same_listing(monkeypatch):
    monkeypatch.setattr(api, "LISTING_PIECE", 7)
    engine = make_engine()
    for sport in range(40000, 40050):
        engine.process(frame(from_client(TCP(sport=sport, dport=80, flags="S"))), 1, 1.0)
    pieces = list(api.conns_json(engine, 2.0))
    assert len(pieces) == 15  # 50 NAT connections are 100 table entries (request and reply keys), 7 a piece
    streamed = json.loads(b"[" + b"".join(pieces) + b"]")
    whole = api.handle(engine, {"op": "list-conns"}, 2.0)["result"]["conns"]
    key = json.dumps
    assert sorted(map(key, streamed)) == sorted(map(key, whole)) and len(streamed) == 50


def test_connections_gone_before_their_piece_are_left_out(monkeypatch):
    monkeypatch.setattr(api, "LISTING_PIECE", 10)
    engine = make_engine()
    for sport in range(40000, 40020):
        engine.process(frame(from_client(TCP(sport=sport, dport=80, flags="S"))), 1, 1.0)
    pieces = api.conns_json(engine, 2.0)
    first = next(pieces)
    engine.tick(1000.0)  # every connection expires meanwhile
    rest = b"".join(pieces)
    assert len(json.loads(b"[" + first + b"]")) == 5 and rest == b""  # 10 entries: 5 NAT connections
