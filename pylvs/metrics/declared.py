"""Every metric lvsd exports, declared once: name, type, help and label names.

The IPVS numbers use node_exporter's IPVS collector names, help texts and labels, so dashboards and
alerts written for a kernel director work unchanged; pylvs's own numbers are under `pylvs_`.
Counters are declared with their exposed name (ending in `_total`).
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTER, GAUGE = "counter", "gauge"

# node_exporter's backend labels (collector/ipvs_linux.go), in its order.
SERVICE_LABELS = ("local_address", "local_port", "proto", "local_mark")
BACKEND_LABELS = ("local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark")
RING_LABELS = ("interface", "ring")  # ring: ip, ip6, arp, fwmark:N or fwmark6:N


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # COUNTER or GAUGE
    help: str
    labels: tuple[str, ...] = ()


METRICS: dict[str, Metric] = {}


def _declare(name: str, kind: str, help_text: str, labels: tuple[str, ...] = ()) -> Metric:
    if name in METRICS:
        raise ValueError(f"metric {name} declared twice")
    if kind == COUNTER and not name.endswith("_total"):
        raise ValueError(f"counter {name} must end in _total")
    METRICS[name] = metric = Metric(name, kind, help_text, labels)
    return metric


# -- node_exporter's IPVS collector -------------------------------------------------------------

IPVS_CONNECTIONS = _declare("node_ipvs_connections_total", COUNTER, "The total number of connections made.")
IPVS_IN_PACKETS = _declare("node_ipvs_incoming_packets_total", COUNTER, "The total number of incoming packets.")
IPVS_OUT_PACKETS = _declare("node_ipvs_outgoing_packets_total", COUNTER, "The total number of outgoing packets.")
IPVS_IN_BYTES = _declare("node_ipvs_incoming_bytes_total", COUNTER, "The total amount of incoming data.")
IPVS_OUT_BYTES = _declare("node_ipvs_outgoing_bytes_total", COUNTER, "The total amount of outgoing data.")
BACKEND_ACTIVE = _declare("node_ipvs_backend_connections_active", GAUGE,
                          "The current active connections by local and remote address.", BACKEND_LABELS)
BACKEND_INACTIVE = _declare("node_ipvs_backend_connections_inactive", GAUGE,
                            "The current inactive connections by local and remote address.", BACKEND_LABELS)
BACKEND_WEIGHT = _declare("node_ipvs_backend_weight", GAUGE,
                          "The current backend weight by local and remote address.", BACKEND_LABELS)

# -- per service and per real server (ipvsadm --stats) ------------------------------------------

SERVICE_INFO = _declare("pylvs_service_info", GAUGE, "A virtual service, with its scheduler (always 1).",
                        (*SERVICE_LABELS, "scheduler"))
SERVICE_CONNECTIONS = _declare("pylvs_service_connections_total", COUNTER,
                               "Connections scheduled by the virtual service.", SERVICE_LABELS)
SERVICE_IN_PACKETS = _declare("pylvs_service_incoming_packets_total", COUNTER,
                              "Packets from clients to the virtual service.", SERVICE_LABELS)
SERVICE_OUT_PACKETS = _declare("pylvs_service_outgoing_packets_total", COUNTER,
                               "Packets from real servers back to clients of the virtual service.", SERVICE_LABELS)
SERVICE_IN_BYTES = _declare("pylvs_service_incoming_bytes_total", COUNTER,
                            "Bytes from clients to the virtual service.", SERVICE_LABELS)
SERVICE_OUT_BYTES = _declare("pylvs_service_outgoing_bytes_total", COUNTER,
                             "Bytes from real servers back to clients of the virtual service.", SERVICE_LABELS)
BACKEND_INFO = _declare("pylvs_backend_info", GAUGE, "A real server, with its forwarding method (always 1).",
                        (*BACKEND_LABELS, "method"))
BACKEND_CONNECTIONS = _declare("pylvs_backend_connections_total", COUNTER,
                               "Connections scheduled to the real server.", BACKEND_LABELS)
BACKEND_PERSISTENT = _declare("pylvs_backend_connections_persistent", GAUGE,
                              "Persistence templates pointing at the real server.", BACKEND_LABELS)
BACKEND_IN_PACKETS = _declare("pylvs_backend_incoming_packets_total", COUNTER,
                              "Packets from clients forwarded to the real server.", BACKEND_LABELS)
BACKEND_OUT_PACKETS = _declare("pylvs_backend_outgoing_packets_total", COUNTER,
                               "Packets from the real server forwarded to clients.", BACKEND_LABELS)
BACKEND_IN_BYTES = _declare("pylvs_backend_incoming_bytes_total", COUNTER,
                            "Bytes from clients forwarded to the real server.", BACKEND_LABELS)
BACKEND_OUT_BYTES = _declare("pylvs_backend_outgoing_bytes_total", COUNTER,
                             "Bytes from the real server forwarded to clients.", BACKEND_LABELS)

# -- the director ----------------------------------------------------------------------------------

BUILD_INFO = _declare("pylvs_build_info", GAUGE, "The running lvsd's version (always 1).", ("version",))
CONNECTION_ENTRIES = _declare("pylvs_connection_table_entries", GAUGE,
                              "Entries in the connection table, persistence templates included (lvsadm -L -c).")
CONNECTION_TEMPLATES = _declare("pylvs_connection_templates", GAUGE, "Persistence templates in the connection table.")
STANDBY = _declare("pylvs_standby", GAUGE,
                   "1 while the director stands by for another (--backup-only with a backup sync daemon).")
DROPS = _declare("pylvs_drops_total", COUNTER, "Frames the engine dropped, by reason (lvsadm --drops).", ("reason",))
FRAME_ERRORS = _declare("pylvs_frame_errors_total", COUNTER,
                        "Frames lost to an error in the engine or in sending.", ("stage",))
RING_PACKETS = _declare("pylvs_ring_packets_total", COUNTER, "Frames read from the receive ring.", RING_LABELS)
RING_DROPS = _declare("pylvs_ring_drops_total", COUNTER, "Frames the kernel dropped because the ring was full.",
                      RING_LABELS)
RING_TRUNCATED = _declare("pylvs_ring_truncated_total", COUNTER, "Frames longer than a ring slot.", RING_LABELS)
RING_RESYNCS = _declare("pylvs_ring_resyncs_total", COUNTER,
                        "Times the reader found its ring out of step and caught up.", RING_LABELS)
DATAPATH = _declare("pylvs_datapath_info", GAUGE, "The data path forwarding established flows (always 1).",
                    ("datapath",))
FASTPATH_CONNECTIONS = _declare("pylvs_fastpath_connections", GAUGE,
                                "Connections whose established packets the kernel fast path forwards.")
FASTPATH_PACKETS = _declare("pylvs_fastpath_packets_total", COUNTER,
                            "Packets the kernel fast path saw, by what it did with them.", ("outcome",))
CONTROL_REQUESTS = _declare("pylvs_control_requests_total", COUNTER,
                            "Requests on the control socket, by operation and result.", ("op", "result"))

# -- health checks (--keepalived) -----------------------------------------------------------------

HEALTH_UP = _declare("pylvs_health_up", GAUGE,
                     "1 while every checker of the real server says it is up, 0 when one says down.", BACKEND_LABELS)
HEALTH_TRANSITIONS = _declare("pylvs_health_transitions_total", COUNTER,
                              "Times the real server's health changed between up and down.", BACKEND_LABELS)

# -- connection sync daemons ----------------------------------------------------------------------

SYNC_RUNNING = _declare("pylvs_sync_daemon_running", GAUGE, "1 while the sync daemon runs.", ("daemon",))
SYNC_MESSAGES = _declare("pylvs_sync_messages_total", COUNTER,
                         "Sync messages sent (master) or received (backup).", ("daemon",))
SYNC_CONNECTIONS = _declare("pylvs_sync_connections_total", COUNTER,
                            "Connections sent (master) or adopted (backup) through sync messages.", ("daemon",))
SYNC_PROBLEMS = _declare("pylvs_sync_problems_total", COUNTER,
                         "Sync messages or connections not sent or not adopted, by reason.", ("daemon", "reason"))
