"""Health endpoints, driven through py-consul 1.8.0.

Covers: health.service (entry shape Node/Service/Checks, the node's
node-level checks, passing=True filtering of warning/critical instances, tag
filter with one tag and with several tags), health.checks (service checks
only), health.node (node and service checks of a node, the servers' serfHealth
member check), health.connect
(sidecar proxies, Connect-native services, passing=True), and check status
changes propagating from the agent to health reads.

Agent writes reach the catalog through anti-entropy, so reads poll with
``wait_until`` (up to ~5 s). TTL checks use a 10 minute TTL so nothing
expires during the session.
"""

from __future__ import annotations

import consul

from compat_util import uniq, wait_until

TTL = "10m"


def _ids(entries):
    return sorted(e["Service"]["ID"] for e in entries)


def _service_check(entry, check_id):
    matches = [c for c in entry["Checks"] if c["CheckID"] == check_id]
    assert len(matches) == 1, entry["Checks"]
    return matches[0]


def _wait_health(client, name, predicate, what, **kwargs):
    return wait_until(lambda: client.health.service(name, **kwargs)[1], predicate, what=what)


def _statuses(client, name):
    """{check ID: status} for the service's checks, as the catalog sees them."""
    return {c["CheckID"]: c["Status"] for c in client.health.checks(name)[1]}


def test_health_service_entry_shape(client, agent_service, node_name):
    name = uniq("hsvc")
    sid = agent_service(
        name, service_id=f"{name}-1", address="127.0.0.1", port=8080, tags=["v1"], check=consul.Check.ttl(TTL)
    )
    cid = f"service:{sid}"
    assert client.agent.check.ttl_pass(cid, notes="ok") is True

    entries = _wait_health(
        client,
        name,
        lambda es: len(es) == 1 and any(c["CheckID"] == cid and c["Status"] == "passing" for c in es[0]["Checks"]),
        what=f"{name} with passing check in health.service",
    )
    entry = entries[0]
    assert entry["Node"]["Node"] == node_name
    assert entry["Node"]["Address"] == "127.0.0.1"
    assert entry["Node"]["Datacenter"] == "dc1"
    assert entry["Service"]["ID"] == sid
    assert entry["Service"]["Service"] == name
    assert entry["Service"]["Tags"] == ["v1"]
    assert entry["Service"]["Port"] == 8080
    assert entry["Service"]["Address"] == "127.0.0.1"
    check = _service_check(entry, cid)
    assert check["Node"] == node_name
    assert check["ServiceID"] == sid
    assert check["ServiceName"] == name
    assert check["Output"] == "ok"
    assert check["Name"] == f"Service '{name}' check"


def test_health_service_includes_node_level_checks(client, agent_service):
    # A node-level check registered on the agent appears beside every service of the node
    # (as the servers' "serfHealth" member check does).
    name = uniq("nodechk")
    agent_service(name, port=1)
    check_id = uniq("node-check")
    assert client.agent.check.register(check_id, check=consul.Check.ttl(TTL)) is True
    try:
        assert client.agent.check.ttl_pass(check_id) is True
        entries = _wait_health(
            client,
            name,
            lambda es: len(es) == 1 and any(c["CheckID"] == check_id for c in es[0]["Checks"]),
            what=f"node check {check_id} beside {name}",
        )
        node_check = _service_check(entries[0], check_id)
        assert node_check["ServiceID"] == ""
        assert node_check["Name"] == check_id
    finally:
        client.agent.check.deregister(check_id)


def test_passing_filters_out_warning_and_critical_instances(client, agent_service):
    name = uniq("passing")
    ok = agent_service(name, service_id=f"{name}-ok", port=1, check=consul.Check.ttl(TTL))
    warn = agent_service(name, service_id=f"{name}-warn", port=2, check=consul.Check.ttl(TTL))
    crit = agent_service(name, service_id=f"{name}-crit", port=3, check=consul.Check.ttl(TTL))
    assert client.agent.check.ttl_pass(f"service:{ok}") is True
    assert client.agent.check.ttl_warn(f"service:{warn}") is True
    # `crit` keeps the initial critical status of a new TTL check.

    expected = {f"service:{ok}": "passing", f"service:{warn}": "warning", f"service:{crit}": "critical"}
    wait_until(lambda: _statuses(client, name), lambda s: s == expected, what="check statuses in catalog")

    assert _ids(client.health.service(name)[1]) == sorted([ok, warn, crit])
    assert _ids(client.health.service(name, passing=True)[1]) == [ok]

    # Recovery brings an instance back into the passing set.
    assert client.agent.check.ttl_pass(f"service:{crit}") is True
    _wait_health(
        client, name, lambda es: _ids(es) == sorted([ok, crit]), what="recovered instance passing", passing=True
    )


def test_health_service_tag_filters(client, agent_service):
    name = uniq("htag")
    a = agent_service(name, service_id=f"{name}-a", port=1, tags=["a"])
    ab = agent_service(name, service_id=f"{name}-ab", port=2, tags=["a", "b"])
    b = agent_service(name, service_id=f"{name}-b", port=3, tags=["b"])
    _wait_health(client, name, lambda es: len(es) == 3, what=f"three {name} instances")

    assert _ids(client.health.service(name, tag="a")[1]) == sorted([a, ab])
    assert _ids(client.health.service(name, tag="b")[1]) == sorted([ab, b])
    # Several tags: only instances carrying all of them (py-consul sends tag=a&tag=b).
    assert _ids(client.health.service(name, tag=["a", "b"])[1]) == [ab]
    assert client.health.service(name, tag="c")[1] == []


def test_health_service_unknown_is_empty_list(client):
    index, entries = client.health.service(uniq("nosuch"))
    assert entries == []
    assert int(index) >= 1


def test_health_checks_returns_only_that_services_checks(client, agent_service):
    name = uniq("hchecks")
    other = uniq("other")
    s1 = agent_service(name, service_id=f"{name}-1", port=1, check=consul.Check.ttl(TTL))
    s2 = agent_service(name, service_id=f"{name}-2", port=2, check=consul.Check.ttl(TTL))
    agent_service(other, port=3, check=consul.Check.ttl(TTL))

    expected = {f"service:{s1}": "critical", f"service:{s2}": "critical"}
    wait_until(lambda: _statuses(client, name), lambda s: s == expected, what=f"checks of {name}")
    checks = client.health.checks(name)[1]
    assert {c["ServiceName"] for c in checks} == {name}
    assert {c["ServiceID"] for c in checks} == {s1, s2}


def test_check_status_change_reaches_health_checks(client, agent_service):
    name = uniq("flip")
    sid = agent_service(name, service_id=f"{name}-1", port=1, check=consul.Check.ttl(TTL))
    cid = f"service:{sid}"
    for update, status in (
        (client.agent.check.ttl_pass, "passing"),
        (client.agent.check.ttl_warn, "warning"),
        (client.agent.check.ttl_fail, "critical"),
    ):
        assert update(cid) is True
        wait_until(lambda: _statuses(client, name), lambda s, st=status: s == {cid: st}, what=f"{cid} {status}")


def test_health_node_lists_node_and_service_checks(client, agent_service, agent_check, node_name):
    name = uniq("hnode")
    sid = agent_service(name, service_id=f"{name}-1", port=1, check=consul.Check.ttl(TTL))
    node_check = agent_check(uniq("nodechk"), consul.Check.ttl(TTL))

    def wanted(checks):
        ids = {c["CheckID"] for c in checks}
        return {f"service:{sid}", node_check} <= ids

    checks = wait_until(lambda: client.health.node(node_name)[1], wanted, what="checks on health.node")
    assert {c["Node"] for c in checks} == {node_name}
    by_id = {c["CheckID"]: c for c in checks}
    assert by_id[node_check]["ServiceID"] == ""
    assert by_id[f"service:{sid}"]["ServiceID"] == sid


def test_the_agents_node_carries_a_passing_serf_health_check(client, node_name):
    # The servers keep Consul's member check on every agent's node; the agent's own check
    # list does not show it, and the agent's anti-entropy leaves it in place.
    def serf(checks):
        return [c for c in checks if c["CheckID"] == "serfHealth"]

    checks = wait_until(lambda: client.health.node(node_name)[1], lambda cs: len(serf(cs)) == 1, what="serfHealth")
    check = serf(checks)[0]
    assert check["Name"] == "Serf Health Status"
    assert check["Status"] == "passing"
    assert check["Output"] == "Agent alive and reachable"
    assert check["ServiceID"] == ""
    assert "serfHealth" not in client.agent.checks()
    passing = [c["CheckID"] for c in client.health.state("passing")[1] if c["Node"] == node_name]
    assert "serfHealth" in passing


def test_deregistered_service_leaves_health(client, agent_service):
    name = uniq("hgone")
    sid = agent_service(name, port=1, check=consul.Check.ttl(TTL))
    _wait_health(client, name, lambda es: len(es) == 1, what=f"{name} in health.service")
    assert client.agent.service.deregister(sid) is True
    _wait_health(client, name, lambda es: es == [], what=f"{name} gone from health.service")
    wait_until(lambda: client.health.checks(name)[1], lambda cs: cs == [], what=f"checks of {name} gone")


def test_health_connect_returns_sidecar(client, agent_service):
    name = uniq("hmesh")
    sid = agent_service(name, service_id=f"{name}-1", address="127.0.0.1", port=8080, connect={"sidecar_service": {}})
    proxy_id = f"{sid}-sidecar-proxy"

    entries = wait_until(
        lambda: client.health.connect(name)[1], lambda es: len(es) == 1, what=f"sidecar of {name} in health.connect"
    )
    svc = entries[0]["Service"]
    assert svc["ID"] == proxy_id
    assert svc["Service"] == f"{name}-sidecar-proxy"
    assert svc["Kind"] == "connect-proxy"
    assert svc["Proxy"]["DestinationServiceName"] == name
    assert svc["Proxy"]["DestinationServiceID"] == sid
    assert {c["ServiceID"] for c in entries[0]["Checks"] if c["ServiceID"]} <= {proxy_id}

    # health.service on the app returns the app only.
    assert _ids(client.health.service(name)[1]) == [sid]


def test_health_connect_returns_native_service(client, agent_service):
    name = uniq("hnative")
    sid = agent_service(name, service_id=f"{name}-1", port=8443, connect={"Native": True})
    entries = wait_until(
        lambda: client.health.connect(name)[1], lambda es: len(es) == 1, what=f"{name} in health.connect"
    )
    assert entries[0]["Service"]["ID"] == sid
    assert entries[0]["Service"]["Connect"]["Native"] is True


def test_health_connect_passing_filters_unhealthy_proxies(client, agent_service):
    dest = uniq("hdest")
    pid = agent_service(
        f"{dest}-proxy",
        service_id=f"{dest}-proxy-1",
        port=21998,
        kind="connect-proxy",
        proxy={"DestinationServiceName": dest, "LocalServicePort": 9000},
        check=consul.Check.ttl(TTL),
    )
    wait_until(lambda: client.health.connect(dest)[1], lambda es: _ids(es) == [pid], what="proxy in health.connect")
    assert client.health.connect(dest, passing=True)[1] == []  # TTL check still critical

    assert client.agent.check.ttl_pass(f"service:{pid}") is True
    wait_until(
        lambda: client.health.connect(dest, passing=True)[1],
        lambda es: _ids(es) == [pid],
        what="proxy passing in health.connect",
    )
