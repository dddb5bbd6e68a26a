"""The IPVS TCP state machine (ip_vs_proto_tcp.c; ipvs.md §3.2-3.3)."""

from __future__ import annotations

from pylvs.packet.layout import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN

NONE, ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, SYNACK = (
    range(11)
)
NAMES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT",
         "LAST_ACK", "LISTEN", "SYNACK")
ACTIVE = frozenset({ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK})
DEFAULT_TIMEOUTS = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)
INITIAL_TIMEOUT = 3  # a new connection lives 3 s until its first transition (ip_vs_conn_new)

# Direction offsets into the table, as the kernel's tcp_state_off.
INPUT, OUTPUT, INPUT_ONLY = 0, 4, 8

_ABBR = {"sNO": NONE, "sES": ESTABLISHED, "sSS": SYN_SENT, "sSR": SYN_RECV, "sFW": FIN_WAIT,
         "sTW": TIME_WAIT, "sCL": CLOSE, "sCW": CLOSE_WAIT, "sLA": LAST_ACK, "sLI": LISTEN, "sSA": SYNACK}

# Rows: syn, fin, ack, rst for INPUT, OUTPUT, INPUT_ONLY; columns: the current state in NAMES order.
_TABLE = """
sSR sES sES sSR sSR sSR sSR sSR sSR sSR sSR
sCL sCW sSS sTW sTW sTW sCL sCW sLA sLI sTW
sES sES sSS sES sFW sTW sCL sCW sCL sLI sES
sCL sCL sCL sSR sCL sCL sCL sCL sLA sLI sSR
sSS sES sSS sSR sSS sSS sSS sSS sSS sLI sSR
sTW sFW sSS sTW sFW sTW sCL sTW sLA sLI sTW
sES sES sSS sES sFW sTW sCL sCW sLA sES sES
sCL sCL sSS sCL sCL sTW sCL sCL sCL sCL sCL
sSR sES sES sSR sSR sSR sSR sSR sSR sSR sSR
sCL sFW sSS sTW sFW sTW sCL sCW sLA sLI sTW
sES sES sSS sES sFW sTW sCL sCW sCL sLI sES
sCL sCL sCL sSR sCL sCL sCL sCL sLA sLI sCL
"""
TRANSITIONS: tuple[tuple[int, ...], ...] = tuple(
    tuple(_ABBR[cell] for cell in row.split()) for row in _TABLE.strip().splitlines()
)


def event(flags: int) -> int:
    """Row index within a direction block: rst 3 (checked first), syn 0, fin 1, ack 2, else -1."""
    if flags & TCP_RST:
        return 3
    if flags & TCP_SYN:
        return 0
    if flags & TCP_FIN:
        return 1
    if flags & TCP_ACK:
        return 2
    return -1


def next_state(state: int, offset: int, flags: int) -> int:
    idx = event(flags)
    if idx < 0:
        return CLOSE
    return TRANSITIONS[offset + idx][state]
