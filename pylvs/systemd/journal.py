"""Logs that read well in the journal: syslog priority prefixes instead of a textual level.

When stderr is the journal's stream (systemd sets $JOURNAL_STREAM to its device:inode), journald
adds the time, the unit and the pid itself, and reads a leading `<N>` as the priority, so
`journalctl -p warning` and the colours work. Anywhere else the plain `lvsd: LEVEL message` form
stays.
"""

from __future__ import annotations

import logging
import os
import sys

# syslog priorities (sd-daemon.h SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG)
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def stderr_is_journal() -> bool:
    """$JOURNAL_STREAM names stderr's device and inode (it may have been redirected since)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = PRIORITIES.get(record.levelno, 3 if record.levelno > logging.ERROR else 6)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())  # a traceback keeps its priority


def configure_logging(prog: str, level: int) -> None:
    """Root logging for a pylvs daemon: journal priorities under systemd, `prog: LEVEL message` otherwise."""
    handler = logging.StreamHandler()
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter(f"{prog}: %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
