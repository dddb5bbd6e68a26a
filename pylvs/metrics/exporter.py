"""The Prometheus side: families as prometheus_client metric families, the text format, `lvsd --metrics`.

The exporter's HTTP thread never touches the engine: its collector reads the latest snapshot the
packet loop published (Publisher.current), so a scrape costs the loop nothing but the copy it makes
at most once a second while someone is reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from pylvs.metrics import declared
from pylvs.metrics.families import Family, families
from pylvs.metrics.publisher import Publisher


def to_prometheus(fam: Family) -> Metric:
    meta = fam.metric
    cls = CounterMetricFamily if meta.kind == declared.COUNTER else GaugeMetricFamily
    out = cls(meta.name, meta.help, labels=list(meta.labels))  # a counter's `_total` is put back on output
    for labels, value in fam.samples:
        out.add_metric(list(labels), value)
    return out


class _Families:
    """A prometheus_client collector over whatever `read` gives."""

    def __init__(self, read: Callable[[], Iterable[Family]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        for fam in self.read():
            yield to_prometheus(fam)

    def describe(self) -> list[Metric]:
        return []  # registering must not read a snapshot


def text(fams: Iterable[Family]) -> str:
    """The Prometheus text exposition format (what /metrics serves)."""
    fams = list(fams)
    return generate_latest(_Families(lambda: fams)).decode()


def registry(publisher: Publisher) -> CollectorRegistry:
    """lvsd's metrics, plus the process's own (CPU, memory, open files)."""
    reg = CollectorRegistry(auto_describe=False)

    cache: list = [None, []]  # (snapshot, its families): scrapes of one snapshot share the work

    def latest() -> list[Family]:
        snap = publisher.current()
        if snap is None:
            return []
        if cache[0] is not snap:
            cache[:] = [snap, families(snap)]
        return cache[1]

    reg.register(_Families(latest))
    ProcessCollector(registry=reg)
    return reg


class Exporter:
    """`lvsd --metrics ADDR:PORT`: /metrics in a thread of its own."""

    def __init__(self, publisher: Publisher, host: str, port: int) -> None:
        self.server, self.thread = start_http_server(port, host, registry(publisher))

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
