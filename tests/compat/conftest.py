"""Session fixtures for the py-consul compatibility suite.

Starts one ``trellis agent --dev`` for the whole session on two free loopback
ports, waits until it has elected itself leader, and hands the tests an
unmodified ``consul.Consul`` client (py-consul 1.8.0) pointed at it.

Environment:
  TRELLIS_BIN          path to the trellis binary; relative paths are taken
                       from the repository root. Default: target/debug/trellis
  TRELLIS_COMPAT_ADDR  host:port of an agent that is already running (Trellis
                       or a real ``consul agent -dev``); when set, nothing is
                       spawned. Useful to check the suite itself against Consul.

Besides ``trellis``/``client``, the function-scoped factories below register
things and remove them again at teardown, so tests stay independent.
If any test fails, the tail of the agent's stderr is printed in the summary.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import consul
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = "target/debug/trellis"
NODE_NAME = "compat-node"
STARTUP_TIMEOUT = 30.0
STDERR_TAIL_LINES = 200

# (label, path) of agent logs to show in the terminal summary after failures.
_AGENT_LOGS: list[tuple[str, Path]] = []


@dataclass
class TrellisAgent:
    """What the tests need to know about the running agent."""

    http_port: int
    server_port: int | None  # None when unknown (external agent)
    node_name: str
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def new_client(self) -> consul.Consul:
        """A fresh client: requests sessions are not shared across threads."""
        return consul.Consul(host=self.host, port=self.http_port)


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for ``count`` distinct free TCP ports on 127.0.0.1."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _trellis_bin() -> Path:
    path = Path(os.environ.get("TRELLIS_BIN", DEFAULT_BIN))
    return path if path.is_absolute() else REPO_ROOT / path


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        with path.open(errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError as err:
        return f"<cannot read {path}: {err}>"


def _leader(base_url: str) -> str | None:
    """The JSON string from GET /v1/status/leader, or None if not ready."""
    try:
        with urllib.request.urlopen(base_url + "/v1/status/leader", timeout=2) as resp:
            value = json.loads(resp.read().decode() or "null")
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return value if isinstance(value, str) and value else None


def _wait_for_leader(base_url: str, proc: subprocess.Popen | None, stderr: Path | None) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(
                f"trellis exited with code {proc.returncode} during startup; stderr tail:\n"
                + (_tail(stderr) if stderr else ""),
                pytrace=False,
            )
        leader = _leader(base_url)
        if leader:
            return leader
        time.sleep(0.2)
    pytest.fail(
        f"no leader at {base_url}/v1/status/leader after {STARTUP_TIMEOUT}s; stderr tail:\n"
        + (_tail(stderr) if stderr else ""),
        pytrace=False,
    )
    raise AssertionError("unreachable")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def trellis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrellisAgent]:
    external = os.environ.get("TRELLIS_COMPAT_ADDR")
    if external:
        host, _, port = external.rpartition(":")
        agent = TrellisAgent(http_port=int(port), server_port=None, node_name="", host=host or "127.0.0.1")
        leader = _wait_for_leader(agent.base_url, None, None)
        agent.server_port = int(leader.rpartition(":")[2])
        agent.node_name = agent.new_client().agent.self()["Config"]["NodeName"]
        yield agent
        return

    binary = _trellis_bin()
    if not binary.is_file():
        pytest.fail(
            f"trellis binary not found at {binary} (build it, or set TRELLIS_BIN / TRELLIS_COMPAT_ADDR)",
            pytrace=False,
        )

    http_port, server_port = _free_ports(2)
    workdir = tmp_path_factory.mktemp("trellis-agent")
    stdout_path, stderr_path = workdir / "stdout.log", workdir / "stderr.log"
    _AGENT_LOGS.append(("trellis stderr", stderr_path))
    cmd = [
        str(binary), "agent", "--dev",
        "--node", NODE_NAME,
        "--http-port", str(http_port),
        "--server-port", str(server_port),
        # Leaf watchers re-issue within a random part of this window after a root rotation
        # (Consul: up to 20 s); a short window keeps the rotation test quick.
        "--leaf-root-change-jitter", "2s",
    ]  # fmt: skip
    env = dict(os.environ, RUST_BACKTRACE=os.environ.get("RUST_BACKTRACE", "1"))
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
    try:
        agent = TrellisAgent(http_port=http_port, server_port=server_port, node_name=NODE_NAME, proc=proc)
        _wait_for_leader(agent.base_url, proc, stderr_path)
        yield agent
    finally:
        _stop(proc)


@dataclass
class AclAgent:
    """A dev agent enforcing ACLs (default deny) and its initial management token."""

    client: consul.Consul
    management: str
    base_url: str


@pytest.fixture
def acl_agent(tmp_path: Path) -> Iterator[AclAgent]:
    """A fresh ``trellis agent --dev`` per test with ``acl { enabled = true, default_policy =
    "deny" }`` and an initial management token, so each test starts from the two tokens
    every ACL system has (the management token and the anonymous token)."""
    import uuid as _uuid

    binary = _trellis_bin()
    if os.environ.get("TRELLIS_COMPAT_ADDR") or not binary.is_file():
        pytest.skip("needs a trellis binary to start an agent with ACLs")
    management = str(_uuid.uuid4())
    config = tmp_path / "acl.hcl"
    config.write_text(
        "acl {\n"
        "  enabled = true\n"
        '  default_policy = "deny"\n'
        f'  tokens {{ initial_management = "{management}" }}\n'
        "}\n"
    )
    http_port, server_port = _free_ports(2)
    stderr_path = tmp_path / "stderr.log"
    _AGENT_LOGS.append(("trellis (ACLs) stderr", stderr_path))
    cmd = [
        str(binary), "agent", "--dev", "--node", NODE_NAME,
        "--http-port", str(http_port), "--server-port", str(server_port),
        "--config-file", str(config),
    ]  # fmt: skip
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        base_url = f"http://127.0.0.1:{http_port}"
        _wait_for_leader(base_url, proc, stderr_path)
        client = consul.Consul(host="127.0.0.1", port=http_port)
        # The leader writes the initial management token once elected.
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                client.acl.token.read_self(token=management)
                break
            except consul.ConsulException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield AclAgent(client=client, management=management, base_url=base_url)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def client(trellis: TrellisAgent) -> consul.Consul:
    """The py-consul client used by the tests (main thread only)."""
    return trellis.new_client()


@pytest.fixture(scope="session")
def http_port(trellis: TrellisAgent) -> int:
    return trellis.http_port


@pytest.fixture(scope="session")
def node_name(trellis: TrellisAgent) -> str:
    return trellis.node_name


# --------------------------------------------------------------------------
# Factories that clean up after themselves.


@pytest.fixture
def agent_service(client: consul.Consul) -> Iterator[Any]:
    """``agent_service(name, service_id=None, *, via=None, **register_kwargs)``
    returns the service ID.

    Registers through ``agent.service.register`` of ``client`` (or of ``via``,
    e.g. a second client used from a background thread) and deregisters at
    teardown, which also removes the service's checks and sidecar."""
    registered: list[str] = []

    def register(name: str, service_id: str | None = None, *, via: consul.Consul | None = None, **kwargs: Any) -> str:
        ok = (via or client).agent.service.register(name, service_id=service_id, **kwargs)
        assert ok is True, f"agent.service.register({name!r}) returned {ok!r}"
        sid = service_id or name
        registered.append(sid)
        return sid

    yield register
    for sid in reversed(registered):
        try:
            client.agent.service.deregister(sid)
        except consul.ConsulException:
            pass


@pytest.fixture
def agent_check(client: consul.Consul) -> Iterator[Any]:
    """``agent_check(name, check, check_id=None, **kwargs) -> check ID``;
    deregistered at teardown."""
    registered: list[str] = []

    def register(name: str, check: dict[str, Any], check_id: str | None = None, **kwargs: Any) -> str:
        ok = client.agent.check.register(name, check=check, check_id=check_id, **kwargs)
        assert ok is True, f"agent.check.register({name!r}) returned {ok!r}"
        cid = check_id or name
        registered.append(cid)
        return cid

    yield register
    for cid in reversed(registered):
        try:
            client.agent.check.deregister(cid)
        except consul.ConsulException:
            pass


@pytest.fixture
def catalog_node(client: consul.Consul) -> Iterator[Any]:
    """``catalog_node(node, address, service=None, check=None, **kwargs)``:
    registers through ``client.catalog.register``; the node is deregistered
    at teardown."""
    nodes: list[str] = []

    def register(node: str, address: str, **kwargs: Any) -> str:
        ok = client.catalog.register(node, address, **kwargs)
        assert ok is True, f"catalog.register({node!r}) returned {ok!r}"
        if node not in nodes:
            nodes.append(node)
        return node

    yield register
    for node in reversed(nodes):
        try:
            client.catalog.deregister(node)
        except consul.ConsulException:
            pass


@pytest.fixture
def config_entry(client: consul.Consul) -> Iterator[Any]:
    """``config_entry(kind, name, body=None, **kwargs) -> result of config.set``;
    the entry is deleted at teardown."""
    entries: list[tuple[str, str]] = []

    def write(kind: str, name: str, body: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if (kind, name) not in entries:
            entries.append((kind, name))
        return client.config.set(kind, name, body, **kwargs)

    yield write
    for kind, name in reversed(entries):
        try:
            client.config.delete(kind, name)
        except consul.ConsulException:
            pass


# --------------------------------------------------------------------------
# Reporting


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """After failures, show the tail of the agent's stderr."""
    stats = terminalreporter.stats
    if not (stats.get("failed") or stats.get("error")):
        return
    for label, path in _AGENT_LOGS:
        terminalreporter.section(f"{label} (last {STDERR_TAIL_LINES} lines of {path})")
        terminalreporter.write(_tail(path) or "<empty>\n")
