"""A snapshot as the declared metrics' samples: what the exporter serves and `lvsadm --metrics` prints.

Every metric in `declared.METRICS` comes out, in declaration order, even with no samples, so a
dashboard sees the family exist; each sample carries exactly its metric's label names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pylvs.metrics import declared as m
from pylvs.metrics.snapshot import Snapshot, Traffic

Labels = tuple[str, ...]


@dataclass(frozen=True)
class Family:
    metric: m.Metric
    samples: tuple[tuple[Labels, float], ...]


_TRAFFIC = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
_IPVS_TOTALS = (m.IPVS_CONNECTIONS, m.IPVS_IN_PACKETS, m.IPVS_OUT_PACKETS, m.IPVS_IN_BYTES, m.IPVS_OUT_BYTES)
_SERVICE_TRAFFIC = (m.SERVICE_CONNECTIONS, m.SERVICE_IN_PACKETS, m.SERVICE_OUT_PACKETS, m.SERVICE_IN_BYTES,
                    m.SERVICE_OUT_BYTES)
_BACKEND_TRAFFIC = (m.BACKEND_CONNECTIONS, m.BACKEND_IN_PACKETS, m.BACKEND_OUT_PACKETS, m.BACKEND_IN_BYTES,
                    m.BACKEND_OUT_BYTES)


def _traffic(out: dict[m.Metric, list], metrics: tuple[m.Metric, ...], labels: Labels, traffic: Traffic) -> None:
    for metric, attr in zip(metrics, _TRAFFIC, strict=True):
        out[metric].append((labels, getattr(traffic, attr)))


def families(snap: Snapshot) -> list[Family]:
    out: dict[m.Metric, list[tuple[Labels, float]]] = {metric: [] for metric in m.METRICS.values()}
    _traffic(out, _IPVS_TOTALS, (), snap.total)
    for svc in snap.services:
        local_address, local_port, proto, local_mark = svc.labels
        out[m.SERVICE_INFO].append(((*svc.labels, svc.scheduler), 1))
        _traffic(out, _SERVICE_TRAFFIC, svc.labels, svc.traffic)
        for dest in svc.dests:
            labels = (local_address, local_port, dest.addr, str(dest.port), proto, local_mark)
            out[m.BACKEND_ACTIVE].append((labels, dest.active))
            out[m.BACKEND_INACTIVE].append((labels, dest.inactive))
            out[m.BACKEND_WEIGHT].append((labels, dest.weight))
            out[m.BACKEND_INFO].append(((*labels, dest.method), 1))
            out[m.BACKEND_PERSISTENT].append((labels, dest.persistent))
            _traffic(out, _BACKEND_TRAFFIC, labels, dest.traffic)
    out[m.BUILD_INFO].append(((snap.version,), 1))
    out[m.CONNECTION_ENTRIES].append(((), snap.conn_entries))
    out[m.CONNECTION_TEMPLATES].append(((), snap.templates))
    out[m.STANDBY].append(((), int(snap.standby)))
    out[m.DROPS] += [((reason,), count) for reason, count in snap.drops]
    out[m.FRAME_ERRORS] += [((stage,), count) for stage, count in snap.frame_errors]
    for ring in snap.rings:
        labels = (ring.interface, ring.ring)
        out[m.RING_PACKETS].append((labels, ring.packets))
        out[m.RING_DROPS].append((labels, ring.drops))
        out[m.RING_TRUNCATED].append((labels, ring.truncated))
        out[m.RING_RESYNCS].append((labels, ring.resyncs))
    out[m.DATAPATH].append(((snap.datapath,), 1))
    out[m.FASTPATH_CONNECTIONS].append(((), snap.fastpath_conns))
    out[m.FASTPATH_PACKETS] += [((name,), count) for name, count in snap.fastpath]
    out[m.CONTROL_REQUESTS] += [((op, result), count) for op, result, count in snap.requests]
    for h in snap.health or ():
        out[m.HEALTH_UP].append((h.labels, int(h.alive)))
        out[m.HEALTH_TRANSITIONS].append((h.labels, h.transitions))
    for d in snap.sync:
        out[m.SYNC_RUNNING].append(((d.daemon,), int(d.running)))
        if d.running:
            out[m.SYNC_MESSAGES].append(((d.daemon,), d.messages))
            out[m.SYNC_CONNECTIONS].append(((d.daemon,), d.conns))
            out[m.SYNC_PROBLEMS] += [((d.daemon, reason), count) for reason, count in d.problems]
    return [Family(metric, _merged(samples)) for metric, samples in out.items()]


def _merged(samples: list[tuple[Labels, float]]) -> tuple[tuple[Labels, float], ...]:
    """Samples with the same labels added up, as node_exporter does (two fwmark services of one mark
    in two families, or a keepalived real server listed twice, would otherwise be duplicate series)."""
    sums: dict[Labels, float] = {}
    for labels, value in samples:
        sums[labels] = sums.get(labels, 0) + value
    return tuple(sums.items())


# -- the control protocol's form (get-metrics) ---------------------------------------------------

def to_json(fams: Iterable[Family]) -> list[dict[str, Any]]:
    return [{"name": f.metric.name, "type": f.metric.kind, "help": f.metric.help, "labels": list(f.metric.labels),
             "samples": [[list(labels), value] for labels, value in f.samples]} for f in fams]


def from_json(data: Iterable[dict[str, Any]]) -> list[Family]:
    """What `get-metrics` answered, back as families (lvsadm prints them)."""
    return [Family(m.Metric(str(f["name"]), str(f["type"]), str(f["help"]), tuple(f["labels"])),
                   tuple((tuple(str(v) for v in labels), value) for labels, value in f["samples"]))
            for f in data]
