"""lvsadm --doctor: what usually goes wrong on DR and TUN real servers, found with real packets.

model.py (what a probe saw, what the doctor says), diagnose.py (from the one to the other, no I/O),
frames.py (the probe's packets, built and parsed with struct), probe.py (the sockets), report.py
(text and JSON), run.py (from lvsd's service table to a report).
"""
