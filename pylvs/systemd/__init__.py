"""lvsd under systemd: the units shipped with pylvs, the sd_notify protocol, journal-friendly logs."""
