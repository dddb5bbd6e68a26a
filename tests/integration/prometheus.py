"""Debian's Prometheus server in a lab namespace: a temporary configuration and storage, bound to the
namespace's loopback, scraping every second; asked PromQL over its HTTP API with curl from the same
namespace. Killed with the lab (Netns.teardown), or earlier by `stop`."""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse

from pylvs.lab.netns import LabError, Netns, wait_for

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: lvsd
    static_configs:
      - targets: ["{target}"]
"""


def binary() -> str:
    path = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not os.path.exists(path):
        raise LabError("prometheus is not installed (apt-get install prometheus)")
    return path


class Prometheus:
    def __init__(self, net: Netns, role: str, target: str, listen: str = "127.0.0.1:9090") -> None:
        self.net, self.role, self.listen = net, role, listen
        base = os.path.join(net.tmp, "prometheus")
        os.makedirs(os.path.join(base, "data"))
        config = os.path.join(base, "prometheus.yml")
        with open(config, "w") as f:
            f.write(CONFIG.format(target=target))
        self.proc = net.popen(role, binary(), f"--config.file={config}", f"--storage.tsdb.path={base}/data",
                              f"--web.listen-address={listen}", "--log.level=warn", log="prometheus.log")
        wait_for(self._ready, timeout=30, what="prometheus to start")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise LabError(f"prometheus exited: {self.log()}")
        r = self.net.exec(self.role, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                          f"http://{self.listen}/-/ready", check=False, timeout=10)
        return r.stdout.strip() == "200"

    def log(self) -> str:
        with open(os.path.join(self.net.tmp, "prometheus.log")) as f:
            return f.read()[-2000:]

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        """The result vector of an instant query: [{"metric": {labels}, "value": [time, "text"]}]."""
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        url = f"http://{self.listen}/api/v1/query?{urllib.parse.urlencode(params)}"
        r = self.net.exec(self.role, "curl", "-sS", "--max-time", "5", url, timeout=15)
        answer = json.loads(r.stdout)
        if answer.get("status") != "success":
            raise LabError(f"PromQL {promql!r}: {answer}")
        return answer["data"]["result"]

    def scalar(self, promql: str, at: float | None = None) -> float | None:
        """The value of a query that gives one series (None if it gives none)."""
        result = self.query(promql, at)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def scraped_after(self, moment: float, timeout: float = 15) -> float:
        """Wait for a successful scrape that started after `moment` (wall clock); its time."""
        found: list[float] = []

        def scraped() -> bool:
            value = self.scalar('timestamp(up{job="lvsd"} == 1)')
            if value is not None and value > moment:
                found.append(value)
                return True
            return False

        wait_for(scraped, timeout=timeout, interval=0.25, what="a scrape of lvsd")
        return found[0]

    def eventually(self, promql: str, wanted, timeout: float = 10) -> list[dict]:
        """Ask until the result satisfies `wanted` (lvsd's numbers are up to a second old when scraped,
        and are scraped every second); the last result either way."""
        last: list[list[dict]] = [[]]

        def check() -> bool:
            last[0] = self.query(promql)
            return bool(wanted(last[0]))

        try:
            wait_for(check, timeout=timeout, interval=0.25, what=promql)
        except LabError:
            pass
        return last[0]

    def stop(self) -> None:
        self.net.kill(self.proc)
