"""IPVS connection synchronisation (ipvs.md §5): the wire format, the master's and the backup's policy.

Everything here is sans-I/O; the multicast sockets and the daemon control live in pylvs.io.
"""
