"""The IPVS SCTP state machine (ip_vs_proto_sctp.c): states, their timeouts, and the transition table
indexed by direction, event (from the packet's first chunk) and state.

A connection is active only in ESTABLISHED. Only an INIT chunk starts a connection (any chunk but
ABORT with sloppy_sctp); a new INIT on a CLOSED connection reschedules it (conn_reuse_mode).
"""

from __future__ import annotations

INPUT, OUTPUT, INPUT_ONLY = 0, 1, 2  # directions, as the table's first index

(NONE, INIT1, INIT, COOKIE_SENT, COOKIE_REPLIED, COOKIE_WAIT, COOKIE, COOKIE_ECHOED, ESTABLISHED,
 SHUTDOWN_SENT, SHUTDOWN_RECEIVED, SHUTDOWN_ACK_SENT, REJECTED, CLOSED) = range(14)
LAST = 14  # IP_VS_SCTP_S_LAST, what the sync protocol bounds states by

NAMES = ("NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE", "C-ECHOED", "ESTABLISHED",
         "S-SENT", "S-RECEIVED", "S-ACK-SENT", "REJECTED", "CLOSED")

MAX_RTO = 61  # IP_VS_SCTP_MAX_RTO, seconds
TIMEOUTS = (2, 4, MAX_RTO, MAX_RTO, MAX_RTO, MAX_RTO, MAX_RTO, MAX_RTO, 15 * 60, MAX_RTO, MAX_RTO, MAX_RTO, 4,
            MAX_RTO)

# Chunk types (RFC 9260 3.2) and the event each one is.
CID_DATA, CID_INIT, CID_INIT_ACK, CID_SACK, CID_HEARTBEAT, CID_HEARTBEAT_ACK, CID_ABORT = range(7)
CID_SHUTDOWN, CID_SHUTDOWN_ACK, CID_ERROR, CID_COOKIE_ECHO, CID_COOKIE_ACK = range(7, 12)
CID_ECN_ECNE, CID_ECN_CWR, CID_SHUTDOWN_COMPLETE = range(12, 15)

(E_DATA, E_INIT, E_INIT_ACK, E_COOKIE_ECHO, E_COOKIE_ACK, E_SHUTDOWN, E_SHUTDOWN_ACK, E_SHUTDOWN_COMPLETE,
 E_ERROR, E_ABORT) = range(10)
_EVENTS = {
    CID_INIT: E_INIT, CID_INIT_ACK: E_INIT_ACK, CID_ABORT: E_ABORT, CID_SHUTDOWN: E_SHUTDOWN,
    CID_SHUTDOWN_ACK: E_SHUTDOWN_ACK, CID_ERROR: E_ERROR, CID_COOKIE_ECHO: E_COOKIE_ECHO,
    CID_COOKIE_ACK: E_COOKIE_ACK, CID_SHUTDOWN_COMPLETE: E_SHUTDOWN_COMPLETE,
}  # every other chunk type (DATA, SACK, HEARTBEATs, ECN, unknown) is the DATA event

_NO, _I1, _IN, _CS, _CR, _CW, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL = range(14)
# TABLE[direction][event][state]; columns in state order NO I1 IN CS CR CW CO CE ES SS SR SA RJ CL.
TABLE = (
    (  # INPUT: from the client
        (_ES, _I1, _IN, _CS, _CR, _CW, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),  # data
        (_I1, _IN, _IN, _CS, _CR, _CW, _CO, _CE, _ES, _SS, _SR, _SA, _IN, _IN),  # init
        (_CW, _CW, _CW, _CS, _CR, _CO, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),  # init ack
        (_CR, _IN, _IN, _CR, _CR, _CW, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),  # cookie echo
        (_ES, _I1, _IN, _CS, _CR, _CW, _CO, _ES, _ES, _SS, _SR, _SA, _RJ, _CL),  # cookie ack
        (_SR, _I1, _IN, _CS, _CR, _CW, _CO, _CE, _SR, _SS, _SR, _SA, _RJ, _CL),  # shutdown
        (_CL, _IN, _IN, _CS, _CR, _CW, _CO, _CE, _ES, _CL, _SR, _CL, _RJ, _CL),  # shutdown ack
        (_CL, _CL, _CL, _CS, _CR, _CW, _CO, _CE, _ES, _SS, _SR, _CL, _RJ, _CL),  # shutdown complete
        (_CL, _I1, _IN, _CS, _CR, _CW, _CO, _CL, _ES, _SS, _SR, _SA, _RJ, _CL),  # error
        (_CL, _CL, _CL, _CL, _CL, _RJ, _CL, _CL, _CL, _CL, _CL, _CL, _CL, _CL),  # abort
    ),
    (  # OUTPUT: from the real server
        (_ES, _I1, _IN, _CS, _CR, _CW, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),
        (_CW, _CW, _CW, _CW, _CW, _CW, _CW, _CW, _ES, _CW, _CW, _CW, _CW, _CW),
        (_CS, _CS, _CS, _CS, _CR, _CW, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),
        (_CE, _CE, _CE, _CE, _CE, _CE, _CE, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),
        (_ES, _ES, _ES, _ES, _ES, _ES, _ES, _ES, _ES, _SS, _SR, _SA, _RJ, _CL),
        (_SS, _SS, _SS, _SS, _SS, _SS, _SS, _SS, _SS, _SS, _SR, _SA, _RJ, _CL),
        (_SA, _SA, _SA, _SA, _SA, _CW, _CO, _CE, _ES, _SA, _SA, _SA, _RJ, _CL),
        (_CL, _I1, _IN, _CS, _CR, _CW, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),
        (_CL, _CL, _CL, _CL, _CL, _CW, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),
        (_CL, _RJ, _CL, _CL, _CL, _CL, _CL, _CL, _CL, _CL, _CL, _CL, _CL, _CL),
    ),
    (  # INPUT_ONLY: from the client, while the real server's replies bypass the director (DR, TUN)
        (_ES, _I1, _IN, _CS, _CR, _ES, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),
        (_I1, _IN, _IN, _IN, _IN, _IN, _CO, _CE, _ES, _SS, _SR, _SA, _IN, _IN),
        (_CE, _CE, _CE, _CE, _CE, _CE, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),
        (_ES, _ES, _ES, _ES, _ES, _ES, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),
        (_ES, _I1, _IN, _ES, _ES, _CW, _ES, _ES, _ES, _SS, _SR, _SA, _RJ, _CL),
        (_SR, _I1, _IN, _CS, _CR, _CW, _CO, _CE, _SR, _SS, _SR, _SA, _RJ, _CL),
        (_CL, _IN, _IN, _CS, _CR, _CW, _CO, _CE, _CL, _CL, _SR, _CL, _RJ, _CL),
        (_CL, _CL, _CL, _CL, _CL, _CW, _CO, _CE, _ES, _SS, _CL, _CL, _RJ, _CL),
        (_CL, _I1, _IN, _CS, _CR, _CW, _CO, _CE, _ES, _SS, _SR, _SA, _RJ, _CL),
        (_CL, _CL, _CL, _CL, _CL, _RJ, _CL, _CL, _CL, _CL, _CL, _CL, _CL, _CL),
    ),
)


def event(chunks: bytes) -> int:
    """The event of a packet from its chunks (set_sctp_state): the first chunk's type, except that a
    COOKIE ECHO or COOKIE ACK with an ABORT bundled right after it is the ABORT."""
    if len(chunks) < 4:
        return E_DATA
    cid = chunks[0]
    if cid in (CID_COOKIE_ECHO, CID_COOKIE_ACK):
        clen = chunks[2] << 8 | chunks[3]
        nxt = (clen + 3) & ~3
        if clen >= 4 and len(chunks) >= nxt + 4 and chunks[nxt] == CID_ABORT:
            cid = CID_ABORT
    return _EVENTS.get(cid, E_DATA)


def next_state(state: int, direction: int, ev: int) -> int:
    return TABLE[direction][ev][state]
