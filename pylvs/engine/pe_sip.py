"""The SIP persistence engine (ip_vs_pe_sip.c): a persistent UDP service with `--pe sip` keys its
templates by the client network and the datagram's Call-ID, so every datagram of one call reaches the
same real server, and different calls from one client spread (with one-packet scheduling, `-o`).

The header is found as the kernel's conntrack helper finds it (ct_sip_get_header): at the start of a
line, full name `Call-ID` or compact `i`, case-insensitive, then a colon between blanks and
continuation lines, then a word, optionally `@` and a second word (callid_len). Two kernel quirks are
kept because they decide which datagrams match: the search starts `dataoff` bytes (the IP and UDP
header lengths) into the payload, and the value must be followed by CR or LF.
"""

from __future__ import annotations

NAME = b"sip"  # as --pe names it, and the sync protocol's PE_NAME option carries it
PEDATA_MAXLEN = 255  # IP_VS_PEDATA_MAXLEN: longer Call-IDs are useless as keys
_CR, _LF, _SP, _TAB, _COLON, _AT = b"\r\n \t:@"
_BREAK = (_CR, _LF)
_BLANK = (_SP, _TAB)
_FULL, _COMPACT = b"call-id", b"i"
# The kernel's ctype: ASCII letters and the Latin-1 letters (0xC0-0xFF but for the two signs).
_ALPHA = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") | \
    (frozenset(range(0xC0, 0x100)) - {0xD7, 0xF7})
_WORDC = _ALPHA | frozenset(b"0123456789!\"%()*+,-./:<>?[\\]_`{}~")  # iswordc()


def call_id(payload: bytes, dataoff: int) -> bytes | None:
    """The Call-ID of a SIP message in a UDP payload, or None (get_callid); `dataoff` is the offset of
    the payload in its IP packet, where the kernel starts looking."""
    limit = len(payload)
    while True:
        found, off, length = _header(payload, dataoff, limit)
        if found > 0:
            break
        if not found:
            return None
        dataoff += off  # a Call-ID header without a usable value: search on from there, as the kernel
    if length > PEDATA_MAXLEN or off + length == limit or payload[off + length] not in _BREAK:
        return None
    return payload[off:off + length]


def _header(data: bytes, i: int, limit: int) -> tuple[int, int, int]:
    """ct_sip_get_header for Call-ID from offset i: (1, offset, length) found, (-1, offset, 0) found
    with no value, (0, 0, 0) not found."""
    while i < limit:
        if data[i] not in _BREAK:
            i += 1
            continue
        i += 1  # the first byte of the next line
        if i >= limit:
            break
        if data[i - 1] == _CR and data[i] == _LF:
            i += 1
            if i >= limit:
                break
        if data[i] in _BLANK:  # a continuation line
            i += 1
            continue
        if limit - i >= len(_FULL) and data[i:i + len(_FULL)].lower() == _FULL:
            at = i + len(_FULL)
        elif limit - i >= 2 and data[i:i + 1].lower() == _COMPACT and data[i + 1] not in _ALPHA:
            at = i + 1  # a compact name must not run on into letters
        else:
            i += 1
            continue
        at = _skip_blanks(data, at, limit)
        if at is None or at >= limit or data[at] != _COLON or at + 1 >= limit:
            break
        at = _skip_blanks(data, at + 1, limit)
        if at is None:
            break
        length = _callid_len(data, at, limit)
        return (1, at, length) if length else (-1, at, 0)
    return 0, 0, 0


def _skip_blanks(data: bytes, i: int, limit: int) -> int | None:
    """sip_skip_whitespace: past blanks, and past a line break only into a continuation line."""
    while i < limit:
        c = data[i]
        if c in _BLANK:
            i += 1
            continue
        if c not in _BREAK:
            return i
        i += 1
        if i >= limit:
            return None
        if data[i - 1] == _CR and data[i] == _LF:
            i += 1
            if i >= limit:
                return None
        if data[i] not in _BLANK:
            return None  # the header ended
        while i < limit and data[i] in _BLANK:
            i += 1
        return i
    return i


def _word_len(data: bytes, i: int, limit: int) -> int:
    start = i
    while i < limit and data[i] in _WORDC:
        i += 1
    return i - start


def _callid_len(data: bytes, i: int, limit: int) -> int:
    """callid_len: word, or word@word."""
    length = _word_len(data, i, limit)
    at = i + length
    if not length or at == limit or data[at] != _AT:
        return length
    domain = _word_len(data, at + 1, limit)
    return length + 1 + domain if domain else 0
