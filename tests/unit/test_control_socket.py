"""The control socket server: no input ends the daemon, memory and connections are bounded,
the default address is scoped to the network namespace, a live socket is never taken over."""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import socket
import tempfile
import threading
import time

import pytest

from pylvs.control import client as control_client
from pylvs.io import control_socket
from pylvs.io.control_socket import ControlServer, ControlSocketError


def echo(request):
    if isinstance(request, dict) and request.get("op") == "boom":
        raise RuntimeError("boom")
    if isinstance(request, dict) and request.get("op") == "unserialisable":
        return {"ok": True, "result": object()}
    if isinstance(request, dict) and request.get("op") == "big":
        return {"ok": True, "result": "x" * request["size"]}
    return {"ok": True, "result": request}


class Served:
    """A ControlServer driven by its own selector loop in a thread, with a settable clock."""

    def __init__(self, address: str, handler=echo) -> None:
        self.now = 0.0
        self.selector = selectors.DefaultSelector()
        self.server = ControlServer(address, handler, self.selector, clock=lambda: self.now)
        self.address = address
        self._lock = threading.Lock()
        self._stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop:
            for key, events in self.selector.select(0.01):
                with self._lock:
                    key.data(key.fd, events)

    def expire(self, now: float) -> None:
        with self._lock:
            self.now = now
            self.server.expire()

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(control_client.sockaddr(self.address))
        return sock

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=2)
        self.server.close()
        self.selector.close()


def abstract_name() -> str:
    return f"@pylvs-test/{secrets.token_hex(6)}"


@pytest.fixture
def served():
    s = Served(abstract_name())
    yield s
    s.close()


def answer(sock: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return json.loads(data)


def closed(sock: socket.socket) -> bool:
    """lvsd closed the connection (a reset if it had our input unread)."""
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


def wait_until(predicate, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# -- no input ends the daemon ------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_is_an_error_answer(served, depth):
    sock = served.connect()
    sock.sendall(b"[" * depth + b"\n")
    assert answer(sock) == {"ok": False, "errno": "EINVAL", "error": "request is not valid JSON"}
    sock.sendall(b'{"op": "still-here"}\n')
    assert answer(sock) == {"ok": True, "result": {"op": "still-here"}}
    assert served.thread.is_alive()


@pytest.mark.parametrize(("line", "errno_name"), [
    (b"\xff\xfe garbage", "EINVAL"),
    (b'{"op": "boom"}', "EIO"),
    (b'{"op": "unserialisable"}', "EIO"),
    (b'"' + b"\\u" * 10, "EINVAL"),
])
def test_failing_requests_are_answered(served, line, errno_name):
    with control_client.Client(served.address) as conn:
        conn._sock.sendall(line + b"\n")
        assert json.loads(conn._reader.readline())["errno"] == errno_name
        assert conn.request({"op": "x"}) == {"ok": True, "result": {"op": "x"}}


# -- bounds ------------------------------------------------------------------------------------

def test_a_big_restore_batch_fits(served):
    ops = [{"op": "add-dest", "svc": {"protocol": "tcp", "addr": f"10.0.{i // 250}.{i % 250}", "port": 80},
            "dest": {"addr": "192.168.0.1", "port": 8080, "method": "masq", "weight": 1}} for i in range(30_000)]
    request = {"op": "batch", "ops": ops}
    assert len(json.dumps(request)) > 4 << 20  # twice a 10,000-rule -R batch
    with control_client.Client(served.address) as conn:
        assert conn.request(request)["result"]["ops"][-1] == ops[-1]


def test_oversized_request_is_refused_and_dropped(served, monkeypatch):
    monkeypatch.setattr(control_socket, "MAX_REQUEST", 1 << 20)
    sock = served.connect()
    try:
        sock.sendall(b"[" + b"1," * (1 << 20))
    except BrokenPipeError:
        pass
    reply = answer(sock)
    assert reply["errno"] == "EMSGSIZE" and "1 MB" in reply["error"]
    wait_until(lambda: not served.server.clients)
    assert closed(sock)


def test_unfinished_input_of_all_clients_is_bounded(served, monkeypatch):
    monkeypatch.setattr(control_socket, "MAX_BUFFERED", 1 << 20)
    first, second = served.connect(), served.connect()
    first.sendall(b"x" * (700 << 10))
    wait_until(lambda: sum(len(c.inbuf) for c in served.server.clients.values()) == 700 << 10)
    try:
        second.sendall(b"x" * (700 << 10))
    except BrokenPipeError:
        pass
    assert answer(second)["errno"] == "EBUSY"
    first.sendall(b"\n")
    assert answer(first)["errno"] == "EINVAL"  # the first one was served


def test_client_count_is_capped_and_idle_clients_make_room(served):
    held = [served.connect() for _ in range(control_socket.MAX_CLIENTS)]
    wait_until(lambda: len(served.server.clients) == control_socket.MAX_CLIENTS)
    extra = served.connect()
    assert answer(extra) == {"ok": False, "errno": "EBUSY",
                             "error": f"lvsd is busy: {control_socket.MAX_CLIENTS} control connections are open"}
    assert served.server.refused == 1
    served.now = control_socket.IDLE_TIMEOUT + 1  # the held ones are idle now: a new client makes room
    with control_client.Client(served.address) as conn:
        assert conn.request({"op": "x"})["ok"]
    assert all(closed(sock) for sock in held)
    for sock in held + [extra]:
        sock.close()


def test_idle_client_is_timed_out(served):
    sock = served.connect()
    wait_until(lambda: len(served.server.clients) == 1)
    served.expire(control_socket.IDLE_TIMEOUT - 1)
    assert len(served.server.clients) == 1
    served.expire(control_socket.IDLE_TIMEOUT + 1)
    assert not served.server.clients and closed(sock)


def test_client_that_never_reads_holds_one_answer_then_is_dropped(served):
    sock = served.connect()
    request = json.dumps({"op": "big", "size": 1 << 20, "pad": "y" * 65536}).encode() + b"\n"
    sock.setblocking(False)
    sent = 0
    for _ in range(100):  # pipelined requests, answers never read
        try:
            sent += sock.send(request)
        except BlockingIOError:
            time.sleep(0.01)
    (client,) = served.server.clients.values()
    assert sent < 100 * len(request)  # lvsd stopped reading: the client is blocked, not lvsd
    with served._lock:
        assert len(client.outbuf) <= (1 << 20) + 100  # at most one answer waits in lvsd
        assert client.writing
    served.expire(control_socket.STALL_TIMEOUT + 1)
    assert not served.server.clients and served.server.dropped == 1


def test_pipelined_requests_are_all_answered(served):
    sock = served.connect()
    sock.sendall(b"".join(json.dumps({"op": "big", "size": 300_000, "n": i}).encode() + b"\n" for i in range(20)))
    reader = sock.makefile("rb")
    assert [len(json.loads(reader.readline())["result"]) for _ in range(20)] == [300_000] * 20


def test_many_small_pipelined_requests(served):
    sock = served.connect()
    sock.sendall(b'{"op": "x"}\n' * 5000)
    reader = sock.makefile("rb")
    assert all(json.loads(reader.readline())["ok"] for _ in range(5000))
    assert len(served.server.clients) == 1


# -- who may connect ---------------------------------------------------------------------------

def test_peer_without_privileges_is_refused(served, monkeypatch):
    monkeypatch.setattr(control_socket, "peer_allowed", lambda sock: False)
    with control_client.Client(served.address) as conn:
        assert conn.request({"op": "x"}) == {"ok": False, "errno": "EPERM",
                                             "error": "Permission denied (you must be root)"}
    assert served.server.refused == 1 and not served.server.clients


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_unprivileged_user_is_refused_on_the_abstract_socket(served):
    """A forked child becomes nobody (no capabilities) and connects; lvsd refuses it at once, and
    root is then served as before."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a raw client: no client-side check
            sock.settimeout(5)
            sock.connect(control_client.sockaddr(served.address))
            os.write(write_end, sock.makefile("rb").readline())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        reply = reader.read()
    os.waitpid(pid, 0)
    assert json.loads(reply) == {"ok": False, "errno": "EPERM", "error": "Permission denied (you must be root)"}
    with control_client.Client(served.address) as conn:
        assert conn.request({"op": "x"})["ok"]


def test_cap_net_admin_is_read_from_proc():
    assert control_client.has_cap_net_admin() == control_client.has_cap_net_admin(os.getpid())
    mine = control_client.has_cap_net_admin(os.getpid())
    with open("/proc/self/status") as f:
        eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    assert mine == bool(eff & (1 << 12))
    assert control_client.has_cap_net_admin(0) is False


def test_unprivileged_lvsadm_fails_before_connecting_as_ipvsadm_does(monkeypatch, capsys):
    from pylvs.cli import lvsadm

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(control_client, "has_cap_net_admin", lambda pid="self": False)
    assert lvsadm.main(["--control", "@pylvs-test/none", "-Ln"]) == 2
    assert capsys.readouterr().err == ("Can't initialize ipvs: Permission denied (you must be root)\n"
                                       "Are you sure that lvsd is running?\n")


# -- addresses ---------------------------------------------------------------------------------

def test_default_address_is_abstract():
    assert control_client.DEFAULT_PATH.startswith("@")
    assert control_client.sockaddr("@pylvs/lvsd") == "\0pylvs/lvsd"
    assert control_client.sockaddr("/run/x.sock") == "/run/x.sock"


def test_abstract_address_in_use_is_refused(served):
    with pytest.raises(ControlSocketError, match="another lvsd is running in this network namespace .* answers"):
        ControlServer(served.address, echo, selectors.DefaultSelector())
    with control_client.Client(served.address) as conn:
        assert conn.request({"op": "x"})["ok"]


@pytest.fixture
def short_dir():
    path = tempfile.mkdtemp(prefix="ctl-", dir="/tmp")  # AF_UNIX paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_live_socket_file_is_never_taken_over(short_dir):
    path = os.path.join(short_dir, "lvsd.sock")
    first = Served(path)
    try:
        inode = os.stat(path).st_ino
        with pytest.raises(ControlSocketError, match=f"another lvsd answers on {path}"):
            ControlServer(path, echo, selectors.DefaultSelector())
        assert os.stat(path).st_ino == inode
        with control_client.Client(path) as conn:
            assert conn.request({"op": "x"})["ok"]
    finally:
        first.close()
    assert not os.path.exists(path)


def test_stale_socket_file_is_replaced(short_dir):
    path = os.path.join(short_dir, "lvsd.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a killed lvsd leaves the file, nobody listens
    second = Served(path)
    try:
        with control_client.Client(path) as conn:
            assert conn.request({"op": "x"})["ok"]
        assert os.stat(path).st_mode & 0o777 == 0o600
    finally:
        second.close()


def test_other_file_is_not_removed(short_dir):
    path = os.path.join(short_dir, "notes.txt")
    with open(path, "w") as f:
        f.write("keep me")
    with pytest.raises(ControlSocketError, match="exists and is not a socket"):
        ControlServer(path, echo, selectors.DefaultSelector())
    with open(path) as f:
        assert f.read() == "keep me"


def test_close_leaves_a_socket_file_that_is_not_its_own(short_dir):
    path = os.path.join(short_dir, "lvsd.sock")
    s = Served(path)
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    try:
        s.close()
        assert os.path.exists(path)
    finally:
        other.close()


# -- big answers are built piece by piece ------------------------------------------------------

def test_a_streamed_answer_is_built_one_piece_per_round_and_reads_as_one_line():
    built = []

    def pieces():
        for i in range(50):
            built.append(i)
            yield (b"," if i else b"") + json.dumps(list(range(i * 10, i * 10 + 10))).encode()[1:-1]

    def handler(request):
        if request.get("op") == "stream":
            return control_socket.Streamed(b'{"ok":true,"result":[', pieces(), b"]}\n")
        return echo(request)

    selector = selectors.DefaultSelector()
    server = ControlServer(abstract_name(), handler, selector)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(control_client.sockaddr(server.path))
    client.settimeout(5)
    try:
        client.sendall(b'{"op":"stream"}\n')
        rounds = 0
        data = b""
        while not data.endswith(b"\n"):
            for key, events in selector.select(1.0):
                key.data(key.fd, events)
            rounds += 1
            # The loop gets control back between pieces: never more than one new piece per round.
            assert len(built) <= rounds, (len(built), rounds)
            client.setblocking(False)
            try:
                data += client.recv(1 << 20)
            except BlockingIOError:
                pass
        assert json.loads(data) == {"ok": True, "result": list(range(500))}
        assert rounds > 10
        client.setblocking(True)
        client.sendall(b'{"op":"after"}\n')  # the connection serves the next request as usual
        for _ in range(3):
            for key, events in selector.select(0.2):
                key.data(key.fd, events)
        assert answer(client) == {"ok": True, "result": {"op": "after"}}
    finally:
        client.close()
        server.close()
        selector.close()
