"""PiCloud behind the real Caddy: caddy/Caddyfile and caddy/cluster.Caddyfile, run as shipped.

Two `picloud up` nodes share one database; Caddy runs the repository's Caddyfiles with their
environment variables pointed at free ports and temporary folders (plain HTTP for the
cluster, HTTPS from Caddy's own CA for the one-machine file).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from picloud.config import load_settings
from tests.runtime_fixtures import ADMIN_TOKEN, engine_built, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
CADDY_DIR = ROOT / "caddy"
CADDY = shutil.which("caddy")
INVOKE_TIMEOUT_S = 2.0
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}

pytestmark = pytest.mark.skipif(
    CADDY is None, reason="caddy is not installed (apt-get install caddy); .ci/run installs it")

ECHO = """#{method: request.method, path: request.path, query: request.query,
  headers: request.headers, body_len: request.body.len(), body_sha256: sha256(request.body)}"""
BROKEN = 'let a = 1;\nthrow "boom";'
SLOW = "let n = 0; loop { n += 1; }"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request on its own connection; a generous timeout for a busy 2-core machine."""
    return httpx.request(method, url, timeout=kwargs.pop("timeout", 30.0), **kwargs)


class Proc:
    """A child process with its output in a file (read back for assertions and failures)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.log_path = folder / f"{name}.log"
        self._log = self.log_path.open("w")
        self.popen = subprocess.Popen(cmd, env=env, cwd=folder, stdout=self._log,
                                      stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._log.close()
        return self.popen.returncode


def _node_env(database_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICLOUD_")}
    env.update({"PYTHONPATH": str(ROOT), "PICLOUD_HOME": str(home),
                "PICLOUD_DATABASE_URL": database_url, "PICLOUD_ADMIN_TOKEN": ADMIN_TOKEN,
                "PICLOUD_INVOKE_TIMEOUT_S": str(INVOKE_TIMEOUT_S),
                "PICLOUD_SCRIPT_TIMEOUT_S": "4"})
    return env


def _caddy_env(folder: Path, **variables: str) -> dict[str, str]:
    """Only what Caddy needs: its state in `folder`, the Caddyfile's variables."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder),
           "XDG_CONFIG_HOME": str(folder / "config"), "XDG_DATA_HOME": str(folder / "data")}
    env.update(variables)
    return env


def _start_caddy(config: str, folder: Path, **variables: str) -> Proc:
    assert CADDY is not None
    return Proc("caddy", [CADDY, "run", "--config", str(CADDY_DIR / config),
                          "--adapter", "caddyfile"], _caddy_env(folder, **variables), folder)


def _wait(check: Callable[[], bool], what: str, proc: Proc, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited while waiting for {what}:\n{proc.log()}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout} s:\n{proc.log()[-3000:]}")


class Front:
    """A running Caddy: its URL and its admin endpoint."""

    def __init__(self, caddy: Proc, port: int, admin_port: int) -> None:
        self.caddy = caddy
        self.url = f"http://127.0.0.1:{port}"
        self.admin_url = f"http://127.0.0.1:{admin_port}"

    def log_entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.caddy.log().splitlines()
                if line.startswith("{")]


def _cluster_caddy(folder: Path, nodes: list[int], health_interval: str) -> Front:
    """cluster.Caddyfile in front of `nodes`, logging which node each request goes to."""
    port, admin = _port(), _port()
    caddy = _start_caddy(
        "cluster.Caddyfile", folder, PICLOUD_DOMAIN=f"http://127.0.0.1:{port}",
        CADDY_BIND="127.0.0.1", CADDY_ADMIN=f"127.0.0.1:{admin}", CADDY_LOG_LEVEL="DEBUG",
        PICLOUD_NODES=" ".join(f"127.0.0.1:{n}" for n in nodes),
        PICLOUD_HEALTH_INTERVAL=health_interval,
        PICLOUD_PROXY_TIMEOUT=f"{INVOKE_TIMEOUT_S * 5:.0f}s")
    return Front(caddy, port, admin)


class Cluster:
    """Two nodes on one database, and a Caddy (`front`) in front of them."""

    front: Front

    def __init__(self, database_url: str, folder: Path) -> None:
        self.database_url = database_url
        self.folder = folder
        self.ports = {"node-a": _port(), "node-b": _port()}
        self.procs: dict[str, Proc] = {}

    @property
    def url(self) -> str:
        return self.front.url

    def start_node(self, name: str) -> None:
        cmd = [sys.executable, "-m", "picloud", "up", "--node", name,
               "--port", str(self.ports[name])]
        self.procs[name] = Proc(name, cmd, _node_env(self.database_url, self.folder / name),
                                self.folder)

    def wait_node(self, name: str) -> None:
        port = self.ports[name]
        wait_healthy(port, timeout=60)
        # Caddy's health check also wants the node's completion listener up.
        _wait(lambda: _request("GET", f"http://127.0.0.1:{port}/healthz").json()[
            "listener"] is True, f"{name}'s listener", self.procs[name])

    def node_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"


@pytest.fixture(scope="module")
def cluster(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not engine_built():
        pytest.skip("picloud/workers/engine.wasm is not a built engine yet (engine/build.sh)")
    c = Cluster(database_url, tmp_path_factory.mktemp("caddy-cluster"))
    try:
        for name in c.ports:
            c.start_node(name)
        for name in c.ports:
            c.wait_node(name)
        # Health checks at start-up only: the tests below control when a node is seen down.
        c.front = _cluster_caddy(c.folder / "caddy", list(c.ports.values()), "10m")
        _wait(lambda: _request("GET", c.url + "/healthz").status_code == 200, "Caddy",
              c.front.caddy)
        yield c
    finally:
        if hasattr(c, "front"):
            assert c.front.caddy.stop() == 0, c.front.caddy.log()
        for proc in c.procs.values():
            proc.stop()


@pytest.fixture(scope="module")
def deployed(cluster: Cluster) -> Cluster:
    for name, source in (("echo", ECHO), ("broken", BROKEN), ("slow", SLOW)):
        r = _request("PUT", f"{cluster.url}/api/scripts/{name}", content=source, headers=AUTH)
        assert r.status_code == 201, r.text
    return cluster


def _invocation(base_url: str, inv_id: str, timeout: float = 10) -> dict[str, Any]:
    """The invocation from the read model, once its result is projected."""
    deadline = time.monotonic() + timeout
    while True:
        r = _request("GET", f"{base_url}/api/invocations/{inv_id}", headers=AUTH)
        assert r.status_code in (200, 404), r.text  # 404: not projected yet
        if r.status_code == 200 and r.json().get("status") not in (None, "pending"):
            return dict(r.json())
        if time.monotonic() > deadline:
            raise AssertionError(f"invocation {inv_id} not projected: {r.status_code} {r.text}")
        time.sleep(0.05)


def _same_response(via: httpx.Response, direct: httpx.Response) -> None:
    assert via.status_code == direct.status_code
    assert via.headers.get("content-type") == direct.headers.get("content-type")
    assert via.content == direct.content


# -- the configuration files -------------------------------------------------------------------


@pytest.mark.parametrize("config", ["Caddyfile", "cluster.Caddyfile"])
@pytest.mark.parametrize("variables", [{}, {"PICLOUD_DOMAIN": "picloud.example.org",
                                           "PICLOUD_NODES": "10.0.0.11:8000 10.0.0.12:8000",
                                           "PICLOUD_UPSTREAM": "127.0.0.1:8001",
                                           "PICLOUD_PROXY_TIMEOUT": "5m"}],
                         ids=["defaults", "configured"])
def test_caddyfiles_validate(config: str, variables: dict[str, str], tmp_path: Path) -> None:
    assert CADDY is not None
    r = subprocess.run([CADDY, "validate", "--adapter", "caddyfile",
                        "--config", str(CADDY_DIR / config)],
                       env=_caddy_env(tmp_path, **variables), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "Valid configuration" in r.stdout + r.stderr, r.stderr
    assert "not formatted" not in r.stderr  # `caddy fmt` leaves the shipped files unchanged


def _adapted(config: str, folder: Path, **variables: str) -> dict[str, Any]:
    """The JSON config Caddy makes of a shipped file (default variables unless given)."""
    assert CADDY is not None
    r = subprocess.run(
        [CADDY, "adapt", "--adapter", "caddyfile", "--config", str(CADDY_DIR / config)],
        env=_caddy_env(folder, **variables), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def _handlers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "handler" in node:
            yield node
        for value in node.values():
            yield from _handlers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _handlers(value)


@pytest.mark.parametrize("config", ["Caddyfile", "cluster.Caddyfile"])
def test_defaults_leave_picloud_its_own_answers(config: str, tmp_path: Path) -> None:
    """Caddy's defaults outlast PiCloud's: its 504 and 413 reach the caller, not Caddy's."""
    defaults = load_settings(home=tmp_path, node="n")
    handlers = list(_handlers(_adapted(config, tmp_path)))
    proxy = next(h for h in handlers if h["handler"] == "reverse_proxy")
    ns = 1e9
    assert proxy["transport"]["response_header_timeout"] > defaults.invoke_timeout_s * ns
    caps = [h["max_size"] for h in handlers if h["handler"] == "request_body"]
    assert len(caps) == (config == "cluster.Caddyfile")  # only the cluster buffers bodies
    assert all(cap > defaults.max_body_bytes for cap in caps)


def test_nodes_list_becomes_one_upstream_each(tmp_path: Path) -> None:
    adapted = _adapted("cluster.Caddyfile", tmp_path,
                       PICLOUD_NODES="10.0.0.11:8000 10.0.0.12:8000")
    proxy = next(h for h in _handlers(adapted) if h["handler"] == "reverse_proxy")
    assert proxy["upstreams"] == [{"dial": "10.0.0.11:8000"}, {"dial": "10.0.0.12:8000"}]


# -- through Caddy -----------------------------------------------------------------------------


def test_requests_are_spread_over_both_nodes(deployed: Cluster) -> None:
    ids = []
    for i in range(16):
        r = _request("GET", f"{deployed.url}/fn/echo/x?i={i}")
        assert r.status_code == 200, r.text
        assert r.json()["query"] == {"i": str(i)}
        ids.append(r.headers["x-picloud-invocation"])
    nodes: dict[str, int] = {}
    for inv_id in ids:  # read from a node directly: Caddy's turns are the invocations' alone
        node = _invocation(deployed.node_url("node-a"), inv_id)["node"]
        nodes[node] = nodes.get(node, 0) + 1
    assert set(nodes) == {"node-a", "node-b"}
    assert min(nodes.values()) >= 6, nodes  # round robin: half each


def test_request_arrives_intact_with_forwarded_headers(deployed: Cluster) -> None:
    body = ("0123456789abcdef" * 60_000).encode()  # 960,000 bytes: under PiCloud's 1 MiB
    r = _request("POST", f"{deployed.url}/fn/echo/a/b?k=v", content=body,
                   headers={"content-type": "text/plain", "x-custom": "kept",
                            "x-forwarded-for": "203.0.113.9", "accept-encoding": "identity"})
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["method"] == "POST" and seen["path"] == "/a/b" and seen["query"] == {"k": "v"}
    assert seen["body_len"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    headers = seen["headers"]
    assert headers["x-custom"] == "kept" and headers["accept-encoding"] == "identity"
    # Caddy trusts no proxy in front of it: a client's own X-Forwarded-For is replaced.
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["host"] == deployed.url.removeprefix("http://")

    # No Accept-Encoding from the client: none reaches the script either.
    conn = http.client.HTTPConnection(deployed.url.removeprefix("http://"), timeout=30)
    try:
        conn.putrequest("GET", "/fn/echo", skip_accept_encoding=True)
        conn.endheaders()
        answer = conn.getresponse()
        assert answer.status == 200
        assert "accept-encoding" not in json.loads(answer.read())["headers"]
    finally:
        conn.close()


def test_authorization_reaches_the_api(deployed: Cluster) -> None:
    r = _request("GET", f"{deployed.url}/api/scripts")
    assert r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
    r = _request("GET", f"{deployed.url}/api/scripts", headers=AUTH)
    assert r.status_code == 200
    assert {"echo", "broken", "slow"} <= {s["name"] for s in r.json()["items"]}


def _served_by_both(c: Cluster, front: Front, n: int = 4) -> None:
    """`n` requests through `front` succeed and reach both nodes (neither left rotation)."""
    nodes = set()
    for _ in range(n):
        r = _request("POST", f"{front.url}/fn/echo", content=b"x")
        assert r.status_code == 200, r.text
        nodes.add(_invocation(c.node_url("node-a"), r.headers["x-picloud-invocation"])["node"])
    assert nodes == {"node-a", "node-b"}


def test_error_bodies_pass_through_unchanged(deployed: Cluster) -> None:
    direct = deployed.node_url("node-a")
    limit = 1 << 20  # PiCloud's default PICLOUD_MAX_BODY_BYTES
    for method, path, content in (("POST", "/fn/echo", b"x" * (limit + 1)),
                                  ("POST", "/fn/echo", b"x" * (3 * limit)),
                                  ("GET", "/fn/nope", None)):
        via = _request(method, deployed.url + path, content=content)
        _same_response(via, _request(method, direct + path, content=content))
        assert via.status_code == (404 if content is None else 413)

    # A chunked body over the limit reaches a node, which answers 413 before reading it:
    # the caller may see that 413 or, when the node's close wins, a 502. Either way no node
    # leaves the rotation for it.
    for _ in range(2):
        r = _request("POST", deployed.url + "/fn/echo", content=iter([b"y" * limit] * 3))
        assert r.status_code in (413, 502)
        if r.status_code == 413:
            assert r.json() == {"error": "Request Entity Too Large"}
    _served_by_both(deployed, deployed.front)

    via = _request("GET", deployed.url + "/fn/broken")
    straight = _request("GET", direct + "/fn/broken")
    assert via.status_code == straight.status_code == 500
    assert via.headers["content-type"] == straight.headers["content-type"]
    got, expected = via.json(), straight.json()
    assert got.pop("invocation_id") == via.headers["x-picloud-invocation"]
    expected.pop("invocation_id")
    assert got == expected and got["error"]["line"] == 2


def test_respond_async_passes_through(deployed: Cluster) -> None:
    r = _request("POST", f"{deployed.url}/fn/echo", content=b"later",
                   headers={"prefer": "respond-async"})
    assert r.status_code == 202
    inv_id = r.headers["x-picloud-invocation"]
    assert r.json() == {"invocation_id": inv_id, "status_url": f"/api/invocations/{inv_id}"}
    assert _invocation(deployed.url, inv_id)["status"] == "succeeded"


def test_picloud_timeout_reaches_the_caller(deployed: Cluster) -> None:
    """Caddy waits longer than PiCloud's invoke timeout: the caller gets PiCloud's 504 body."""
    started = time.monotonic()
    r = _request("GET", f"{deployed.url}/fn/slow", timeout=30)
    elapsed = time.monotonic() - started
    assert r.status_code == 504, r.text
    body = r.json()
    assert body["invocation_id"] == r.headers["x-picloud-invocation"]
    assert body["error"]["kind"] == "timeout"
    assert INVOKE_TIMEOUT_S <= elapsed < INVOKE_TIMEOUT_S + 3


def test_metrics_are_not_served_through_caddy(deployed: Cluster) -> None:
    assert _request("GET", f"{deployed.url}/metrics").status_code == 404
    assert _request("GET", deployed.node_url("node-a") + "/metrics").status_code == 200


def test_one_machine_caddyfile_serves_https(deployed: Cluster, tmp_path: Path) -> None:
    https_port, http_port = _port(), _port()
    caddy = _start_caddy("Caddyfile", tmp_path, PICLOUD_DOMAIN="localhost",
                         CADDY_HTTPS_PORT=str(https_port), CADDY_HTTP_PORT=str(http_port),
                         CADDY_BIND="127.0.0.1", CADDY_ADMIN="off",
                         PICLOUD_UPSTREAM=f"127.0.0.1:{deployed.ports['node-b']}")
    try:
        root = tmp_path / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        _wait(root.exists, "Caddy's local CA", caddy)
        context = ssl.create_default_context(cafile=str(root))
        url = f"https://localhost:{https_port}"
        _wait(lambda: _request("GET", url + "/healthz", verify=context).status_code == 200,
              "HTTPS through Caddy", caddy)
        r = _request("POST", url + "/fn/echo", content=b"secure", verify=context)
        assert r.status_code == 200, r.text
        assert r.json()["headers"]["x-forwarded-proto"] == "https"
        assert _invocation(deployed.url, r.headers["x-picloud-invocation"])["node"] == "node-b"
        too_big = b"x" * ((1 << 20) + 1)
        _same_response(_request("POST", url + "/fn/echo", content=too_big, verify=context),
                       _request("POST", deployed.node_url("node-b") + "/fn/echo",
                                content=too_big))
        redirect = _request("GET", f"http://localhost:{http_port}/fn/echo?x=1")
        assert redirect.status_code == 308
        # The site address has no port, so the redirect names HTTPS's default one.
        assert redirect.headers["location"] == "https://localhost/fn/echo?x=1"
    finally:
        assert caddy.stop() == 0, caddy.log()


@contextmanager
def _another_caddy(c: Cluster, folder: Path, health_interval: str) -> Iterator[Front]:
    """One more Caddy in front of the same nodes, node-b listed first."""
    front = _cluster_caddy(folder, [c.ports["node-b"], c.ports["node-a"]], health_interval)
    try:
        yield front
    finally:
        assert front.caddy.stop() == 0, front.caddy.log()


def _slow_since(c: Cluster, started: str) -> list[dict[str, Any]]:
    r = _request("GET", c.node_url("node-a") + "/api/invocations", headers=AUTH,
                 params={"script": "slow", "since": started})
    return list(r.json()["items"])


def _slow_pair_with_b_killed(c: Cluster, started: str) -> list[httpx.Response]:
    """Two slow invocations through `c`, one on each node; node-b is killed mid-request."""
    with ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(_request, "GET", f"{c.url}/fn/slow") for _ in range(2)]
        # Both recorded: both in flight, one on each node.
        _wait(lambda: len(_slow_since(c, started)) == 2, "both slow invocations",
              c.front.caddy)
        assert not any(call.done() for call in calls)
        c.procs["node-b"].popen.kill()
        return sorted((call.result() for call in calls), key=lambda r: r.status_code)


def test_node_killed_mid_request_failover_and_return(deployed: Cluster, tmp_path: Path) -> None:
    """Last in this module: it kills node-b, then starts it again."""
    a_address, b_address = deployed.address("node-a"), deployed.address("node-b")
    with _another_caddy(deployed, tmp_path / "passive", "10m") as passive:
        _wait(lambda: _request("GET", passive.admin_url + "/config/").status_code == 200,
              "Caddy's admin endpoint", passive.caddy)
        started = datetime.now(UTC).isoformat()
        answers = _slow_pair_with_b_killed(deployed, started)
        # The invocation node-b had received (it may have run) is not sent to node-a again:
        # Caddy answers 502 at once, while node-a's answer is PiCloud's 504 at its timeout.
        assert [r.status_code for r in answers] == [502, 504]
        assert answers[0].content == b"" and "x-picloud-invocation" not in answers[0].headers
        assert answers[1].json()["error"]["kind"] == "timeout"
        deployed.procs["node-b"].stop()

        # Failover: this Caddy's only health check ran before the kill (10 min interval), so
        # node-b is still in its rotation; each refused connection is retried on node-a,
        # request body included.
        for i in range(6):
            body = f"after the kill {i}".encode()
            r = _request("POST", f"{passive.url}/fn/echo", content=body)
            assert r.status_code == 200, r.text
            assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
            inv_id = r.headers["x-picloud-invocation"]
            assert _invocation(deployed.node_url("node-a"), inv_id)["node"] == "node-a"
        refused = [e for e in passive.log_entries() if e.get("msg") == "upstream roundtrip"
                   and e.get("upstream") == b_address and "refused" in e.get("error", "")]
        assert len(refused) >= 3  # round robin sent half of them to node-b first
        # The first Caddy, too, still lists node-b: no error there either.
        for _ in range(4):
            assert _request("POST", f"{deployed.url}/fn/echo", content=b"x").status_code == 200

    # Active health checks: a Caddy started now never sends a request to node-b...
    with _another_caddy(deployed, tmp_path / "active", "200ms") as active:
        _wait(lambda: f'"host":"{b_address}"' in active.caddy.log(), "the first health check",
              active.caddy)
        for _ in range(6):
            r = _request("POST", f"{active.url}/fn/echo", content=b"x")
            assert r.status_code == 200, r.text
        selected = [e.get("dial") for e in active.log_entries()
                    if e.get("msg") == "selected upstream"]
        assert selected == [a_address] * 6

        # ...until node-b is back: then it takes its turns again.
        deployed.start_node("node-b")
        deployed.wait_node("node-b")
        served: set[str] = set()
        deadline = time.monotonic() + 10
        while served != {"node-a", "node-b"} and time.monotonic() < deadline:
            r = _request("POST", f"{active.url}/fn/echo", content=b"x")
            assert r.status_code == 200, r.text
            served.add(_invocation(deployed.node_url("node-a"),
                                   r.headers["x-picloud-invocation"])["node"])
        assert served == {"node-a", "node-b"}
    # The invocation node-b had received when it was killed ran once node-b was back.
    killed_pair = _slow_since(deployed, started)
    assert len(killed_pair) == 2
    for item in killed_pair:
        assert _invocation(deployed.node_url("node-a"), item["id"], timeout=30)["status"] in (
            "succeeded", "failed")
