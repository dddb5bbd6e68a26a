"""keepalived model -> lvsd control requests (docs/control-protocol.md).

* `build(config)`: the requests that set up the LVS table as keepalived installs it at startup:
  every real server up unless `alpha` (then down: absent, or weight 0 when inhibited), the sorry
  server when the quorum starts down, `lvs_flush` and `lvs_timeouts` first.
* `diff(old, new)`: the minimal requests for a reload: removed services and real servers are
  deleted, new ones added, changed ones edited, unchanged ones left alone.

Both run the health runtime's state model (`pylvs.health.pool`) without any checks, so the
tables they produce are the ones the running `HealthManager` starts from.
"""

from __future__ import annotations

from typing import Any

from pylvs.health.pool import Runtime
from pylvs.keepalived.errors import Diagnostics
from pylvs.keepalived.ipvs import Table
from pylvs.keepalived.model import Config

Request = dict[str, Any]


def build(config: Config, diags: Diagnostics | None = None) -> list[Request]:
    """Startup requests for a validated configuration."""
    return Runtime(config, diags=diags).start().requests


def table(config: Config) -> Table:
    """What lvsd holds after `build(config)`: {svc_key: (service, {(addr, port): dest})}."""
    return Runtime(config).desired()


def diff(old: Config, new: Config) -> list[Request]:
    """Reload requests, assuming lvsd holds what `old` installed at startup."""
    before = Runtime(old)
    before.start()
    after = Runtime(new, previous=before)
    return after.reload_effects(before).requests


def batch(requests: list[Request]) -> Request:
    """Wrap requests into one all-or-nothing `batch` request."""
    return {"op": "batch", "ops": requests}
