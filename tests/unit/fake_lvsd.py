"""An in-process stand-in for lvsd's control side (docs/control-protocol.md), for unit tests.

It keeps services and destinations as the requests describe them and answers in the protocol's
shape: services in creation order, destinations newest first, errors with the kernel errno name
and ipvsadm's text. Every request goes through JSON so that anything not serialisable fails here
as it would on the socket. `FakeLvsd.serve(path)` also puts it behind a real Unix socket.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import threading
from typing import Any

from pylvs.sched import SCHEDULERS

EINVAL_TEXT = "Invalid operation.  Possibly wrong module version, address not unicast, ..."
_ZERO_STATS = {"conns": 0, "inpkts": 0, "outpkts": 0, "inbytes": 0, "outbytes": 0}
_ZERO_RATES = {"cps": 0, "inpps": 0, "outpps": 0, "inbps": 0, "outbps": 0}
_SVC_CONFIG = ("scheduler", "flags", "timeout", "netmask", "pe")
_DEST_CONFIG = ("method", "weight", "u_threshold", "l_threshold", "tun_type", "tun_port", "tun_flags")


class FakeError(Exception):
    def __init__(self, errno_name: str, text: str):
        super().__init__(text)
        self.errno_name = errno_name
        self.text = text


def svc_key(svc: dict[str, Any]) -> tuple[Any, ...]:
    if svc.get("fwmark"):
        return ("fwmark", int(svc["fwmark"]), svc.get("af", "inet"))
    return (svc["protocol"], svc["addr"], int(svc["port"]))


class FakeLvsd:
    """Answers control requests from in-memory state; `requests` records what it was sent."""

    def __init__(self) -> None:
        self.services: list[dict[str, Any]] = []
        self.timeouts = {"tcp": 900, "tcpfin": 120, "udp": 300}
        self.daemons: list[dict[str, Any]] = []
        self.conns: list[dict[str, Any]] = []
        self.laddrs: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self.info = {"version": "1.2.1", "size": 4096}
        self.requests: list[dict[str, Any]] = []

    # -- protocol entry point ------------------------------------------------------------------

    def request(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = json.loads(json.dumps(obj))
        self.requests.append(obj)
        return self._answer(obj)

    def _answer(self, obj: dict[str, Any]) -> dict[str, Any]:
        try:
            result = self._apply(obj)
        except BatchError as err:
            return {"ok": False, "errno": err.errno_name, "error": err.text, "line": err.index}
        except FakeError as err:
            return {"ok": False, "errno": err.errno_name, "error": err.text}
        return json.loads(json.dumps({"ok": True, "result": result}))

    def _apply(self, obj: dict[str, Any]) -> Any:
        op = obj.get("op")
        if op == "batch":
            return self._batch(obj.get("ops", []))
        if op == "sequence":  # each op on its own, one answer each
            return [self._answer(sub) for sub in obj.get("ops", [])]
        handler = getattr(self, "_op_" + str(op).replace("-", "_"), None)
        if handler is None:
            raise FakeError("EINVAL", EINVAL_TEXT)
        return handler(obj)

    def _batch(self, ops: list[dict[str, Any]]) -> None:
        saved = copy.deepcopy((self.services, self.timeouts, self.daemons, self.laddrs))
        for index, op in enumerate(ops):
            try:
                self._apply(op)
            except FakeError as err:
                self.services, self.timeouts, self.daemons, self.laddrs = saved
                raise BatchError(err, index) from None
        return None

    # -- helpers -----------------------------------------------------------------------------

    def find(self, svc: dict[str, Any]) -> dict[str, Any] | None:
        key = svc_key(svc)
        return next((s for s in self.services if svc_key(s) == key), None)

    def _need(self, svc: dict[str, Any], text: str) -> dict[str, Any]:
        found = self.find(svc)
        if found is None:
            raise FakeError("ESRCH", text)
        return found

    @staticmethod
    def _check_service(service: dict[str, Any]) -> None:
        if service.get("scheduler") not in SCHEDULERS or service.get("pe") not in ("", "sip", None):
            raise FakeError("ENOENT", "Scheduler or persistence engine not found")

    # -- operations ------------------------------------------------------------------------

    def _op_add_service(self, obj: dict[str, Any]) -> None:
        service = obj["service"]
        if self.find(service) is not None:
            raise FakeError("EEXIST", "Service already exists")
        self._check_service(service)
        entry = copy.deepcopy(service)
        entry.update(stats=dict(_ZERO_STATS), rates=dict(_ZERO_RATES), dests=[])
        self.services.append(entry)

    def _op_edit_service(self, obj: dict[str, Any]) -> None:
        service = obj["service"]
        entry = self._need(service, "No such service")
        self._check_service(service)
        for key in _SVC_CONFIG:
            entry[key] = service.get(key)

    def _op_del_service(self, obj: dict[str, Any]) -> None:
        self.services.remove(self._need(obj["svc"], "No such service"))

    def _op_flush(self, obj: dict[str, Any]) -> None:
        self.services.clear()

    def _dest_of(self, svc: dict[str, Any], dest: dict[str, Any]) -> dict[str, Any] | None:
        key = (dest["addr"], dest["port"])
        return next((d for d in svc["dests"] if (d["addr"], d["port"]) == key), None)

    def _op_add_dest(self, obj: dict[str, Any]) -> None:
        svc = self._need(obj["svc"], "Service not defined")
        if self._dest_of(svc, obj["dest"]) is not None:
            raise FakeError("EEXIST", "Destination already exists")
        entry = copy.deepcopy(obj["dest"])
        entry.update(activeconns=0, inactconns=0, persistconns=0)
        entry.update(stats=dict(_ZERO_STATS), rates=dict(_ZERO_RATES))
        svc["dests"].insert(0, entry)  # kernel order: newest first

    def _op_edit_dest(self, obj: dict[str, Any]) -> None:
        svc = self._need(obj["svc"], "Service not defined")
        entry = self._dest_of(svc, obj["dest"])
        if entry is None:
            raise FakeError("ENOENT", "No such destination")
        for key in _DEST_CONFIG:
            entry[key] = obj["dest"].get(key)

    def _op_del_dest(self, obj: dict[str, Any]) -> None:
        svc = self._need(obj["svc"], "Service not defined")
        entry = self._dest_of(svc, obj["dest"])
        if entry is None:
            raise FakeError("ENOENT", "No such destination")
        svc["dests"].remove(entry)

    def _op_zero(self, obj: dict[str, Any]) -> None:
        targets = [self._need(obj["svc"], "No such service")] if obj.get("svc") else self.services
        for svc in targets:
            for item in [svc, *svc["dests"]]:
                item["stats"], item["rates"] = dict(_ZERO_STATS), dict(_ZERO_RATES)

    def _op_set_timeout(self, obj: dict[str, Any]) -> None:
        for key in ("tcp", "tcpfin", "udp"):
            if obj.get(key):
                self.timeouts[key] = int(obj[key])

    def _op_get_timeout(self, obj: dict[str, Any]) -> dict[str, int]:
        return dict(self.timeouts)

    def _op_get_info(self, obj: dict[str, Any]) -> dict[str, Any]:
        return dict(self.info, services=len(self.services))

    def _op_list(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj.get("svc"):
            return {"services": [copy.deepcopy(self._need(obj["svc"], "No such service"))]}
        return {"services": copy.deepcopy(self.services)}

    def _op_list_conns(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {"conns": copy.deepcopy(self.conns)}

    def _op_start_daemon(self, obj: dict[str, Any]) -> None:
        state = obj["daemon"]["state"]
        if any(d["state"] == state for d in self.daemons):
            raise FakeError("EEXIST", "Daemon has already run")
        self.daemons.append(copy.deepcopy(obj["daemon"]))

    def _op_stop_daemon(self, obj: dict[str, Any]) -> None:
        state = obj["daemon"]["state"]
        running = [d for d in self.daemons if d["state"] == state]
        if not running:
            raise FakeError("ESRCH", "No daemon is running")
        self.daemons.remove(running[0])

    def _op_get_daemon(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {"daemons": copy.deepcopy(self.daemons)}

    def _op_add_laddr(self, obj: dict[str, Any]) -> None:
        svc = self._need(obj["svc"], "Service not defined")
        self.laddrs.setdefault(svc_key(svc), []).append({"addr": obj["laddr"], "conflicts": 0, "conns": 0})

    def _op_del_laddr(self, obj: dict[str, Any]) -> None:
        svc = self._need(obj["svc"], "Service not defined")
        entries = self.laddrs.get(svc_key(svc), [])
        match = [la for la in entries if la["addr"] == obj["laddr"]]
        if not match:
            raise FakeError("ENOENT", "No such destination")
        entries.remove(match[0])

    def _op_get_laddr(self, obj: dict[str, Any]) -> dict[str, Any]:
        targets = [self._need(obj["svc"], "No such service")] if obj.get("svc") else self.services
        out = []
        for svc in targets:
            ident = {k: svc[k] for k in ("protocol", "addr", "port", "fwmark", "af") if k in svc}
            out.append(ident | {"laddrs": copy.deepcopy(self.laddrs.get(svc_key(svc), []))})
        return {"services": out}

    # -- a real socket in front of it ------------------------------------------------------

    def serve(self, path: str) -> threading.Thread:
        """Listen on a Unix socket at `path` (one client at a time) until the socket is removed."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(4)
        listener.settimeout(0.2)

        def loop() -> None:
            with listener:
                while os.path.exists(path):
                    try:
                        conn, _ = listener.accept()
                    except TimeoutError:
                        continue
                    with conn, conn.makefile("rwb") as stream:
                        for line in stream:
                            stream.write(json.dumps(self.request(json.loads(line))).encode() + b"\n")
                            stream.flush()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread


class BatchError(FakeError):
    def __init__(self, err: FakeError, index: int):
        super().__init__(err.errno_name, err.text)
        self.index = index

