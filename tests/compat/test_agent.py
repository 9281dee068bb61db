"""Agent endpoints, driven through py-consul 1.8.0.

Covers: status.leader / status.peers, agent.self, agent.members,
agent.service.register / agent.services / agent.service_definition /
agent.service.deregister (incl. unknown IDs -> 404), agent.checks,
agent.check.register / ttl_pass / ttl_warn / ttl_fail / deregister,
default check IDs and names for service checks, and Connect sidecar
registration (``connect={"sidecar_service": {}}`` in both snake_case and
PascalCase), its defaults (ID/name suffix, Kind, Proxy.*, port range, copied
Meta/Tags, default checks), and removal together with its parent.

Wire format to keep in mind: py-consul sends *lower-case* keys for the agent
register bodies ("name", "id", "port", "tags", "meta", "checks", "connect",
"serviceid", "ttl"...). Consul decodes them case-insensitively.
"""

from __future__ import annotations

import consul
import pytest

from compat_util import raw_request, uniq, wait_until

SIDECAR_MIN_PORT, SIDECAR_MAX_PORT = 21000, 21255


# --------------------------------------------------------------------------
# status / self / members


def test_status_leader_is_host_port_of_server(client, trellis):
    leader = client.status.leader()
    assert isinstance(leader, str) and leader, leader
    host, _, port = leader.rpartition(":")
    assert host == "127.0.0.1"
    assert port.isdigit()
    if trellis.server_port is not None:
        assert int(port) == trellis.server_port


def test_status_peers_is_list_containing_leader(client):
    peers = client.status.peers()
    assert isinstance(peers, list)
    assert client.status.leader() in peers


def test_agent_self_describes_dev_server(client, node_name):
    me = client.agent.self()
    assert me["Config"]["NodeName"] == node_name
    assert me["Config"]["Datacenter"] == "dc1"
    assert me["Config"]["Server"] is True
    assert me["Member"]["Name"] == node_name


def test_agent_members_lists_this_node_alive(client, node_name):
    members = client.agent.members()
    assert isinstance(members, list)
    mine = [m for m in members if m["Name"] == node_name]
    assert len(mine) == 1, members
    me = mine[0]
    assert me["Status"] == 1  # serf.StatusAlive
    assert me["Addr"] == "127.0.0.1"
    assert me["Tags"]["dc"] == "dc1"
    assert me["Tags"]["role"] == "consul"  # servers carry role=consul


# --------------------------------------------------------------------------
# service registration


def test_register_service_appears_in_agent_services(client, agent_service):
    name = uniq("web")
    sid = agent_service(
        name, service_id=f"{name}-1", address="127.0.0.1", port=8080, tags=["v1", "primary"], meta={"version": "1"}
    )

    services = client.agent.services()
    assert isinstance(services, dict)
    assert sid in services
    svc = services[sid]
    assert svc["ID"] == sid
    assert svc["Service"] == name
    assert svc["Tags"] == ["v1", "primary"]
    assert svc["Port"] == 8080
    assert svc["Address"] == "127.0.0.1"
    assert svc["Meta"] == {"version": "1"}
    assert svc["Weights"] == {"Passing": 1, "Warning": 1}


def test_agent_services_is_keyed_by_service_id(client, agent_service):
    name = uniq("keyed")
    agent_service(name, service_id=f"{name}-a", port=1001)
    agent_service(name, service_id=f"{name}-b", port=1002)
    services = client.agent.services()
    for key, svc in services.items():
        assert key == svc["ID"]
    assert services[f"{name}-a"]["Port"] == 1001
    assert services[f"{name}-b"]["Port"] == 1002


def test_service_id_defaults_to_name_and_tags_to_empty_list(client, agent_service):
    name = uniq("noid")
    agent_service(name)
    svc = client.agent.services()[name]
    assert svc["ID"] == name
    assert svc["Service"] == name
    assert svc["Tags"] == []
    assert svc["Port"] == 0


def test_service_definition_returns_single_service(client, agent_service):
    name = uniq("def")
    sid = agent_service(name, service_id=f"{name}-1", port=7000, tags=["x"])
    svc = client.agent.service_definition(sid)
    assert svc["ID"] == sid
    assert svc["Service"] == name
    assert svc["Port"] == 7000
    assert svc["Tags"] == ["x"]


def test_reregistering_same_id_replaces_definition(client, agent_service):
    name = uniq("rereg")
    sid = agent_service(name, service_id=f"{name}-1", port=1000, tags=["old"])
    agent_service(name, service_id=sid, port=2000, tags=["new"])
    services = client.agent.services()
    assert services[sid]["Port"] == 2000
    assert services[sid]["Tags"] == ["new"]
    assert len([s for s in services.values() if s["Service"] == name]) == 1


def test_deregister_removes_service_and_its_checks(client, agent_service):
    name = uniq("gone")
    sid = agent_service(name, service_id=f"{name}-1", check=consul.Check.ttl("10m"))
    assert sid in client.agent.services()
    assert f"service:{sid}" in client.agent.checks()

    assert client.agent.service.deregister(sid) is True
    assert sid not in client.agent.services()
    assert f"service:{sid}" not in client.agent.checks()


def test_deregister_unknown_service_is_404(client, trellis):
    missing = uniq("missing")
    # py-consul's CB.boolean turns a 404 into False rather than raising.
    assert client.agent.service.deregister(missing) is False
    resp = raw_request(trellis.base_url, "PUT", f"/v1/agent/service/deregister/{missing}")
    assert resp.status == 404


# --------------------------------------------------------------------------
# checks


def test_service_ttl_check_gets_default_id_name_and_critical_status(client, agent_service, node_name):
    name = uniq("ttl")
    sid = agent_service(name, service_id=f"{name}-1", check=consul.Check.ttl("10m"))
    checks = client.agent.checks()
    check = checks[f"service:{sid}"]
    assert check["CheckID"] == f"service:{sid}"
    assert check["Name"] == f"Service '{name}' check"
    assert check["Status"] == "critical"  # new checks start critical
    assert check["ServiceID"] == sid
    assert check["ServiceName"] == name
    assert check["Node"] == node_name
    assert check["Type"] == "ttl"


def test_multiple_service_checks_get_numbered_ids(client, agent_service):
    name = uniq("multi")
    sid = agent_service(
        name, service_id=f"{name}-1", check=consul.Check.ttl("10m"), extra_checks=[consul.Check.ttl("10m")]
    )
    checks = client.agent.checks()
    assert f"service:{sid}:1" in checks
    assert f"service:{sid}:2" in checks
    assert f"service:{sid}" not in checks


def test_ttl_pass_warn_fail_change_status_and_output(client, agent_service):
    name = uniq("ttlstate")
    sid = agent_service(name, service_id=f"{name}-1", check=consul.Check.ttl("10m"))
    cid = f"service:{sid}"

    assert client.agent.check.ttl_pass(cid, notes="all good") is True
    check = client.agent.checks()[cid]
    assert check["Status"] == "passing"
    assert check["Output"] == "all good"

    assert client.agent.check.ttl_warn(cid, notes="getting slow") is True
    check = client.agent.checks()[cid]
    assert check["Status"] == "warning"
    assert check["Output"] == "getting slow"

    assert client.agent.check.ttl_fail(cid, notes="down") is True
    check = client.agent.checks()[cid]
    assert check["Status"] == "critical"
    assert check["Output"] == "down"

    assert client.agent.check.ttl_pass(cid) is True
    assert client.agent.checks()[cid]["Status"] == "passing"


def test_check_register_standalone_for_service_then_deregister(client, agent_service, agent_check):
    name = uniq("chk")
    sid = agent_service(name, service_id=f"{name}-1")
    cid = agent_check(f"{name} heartbeat", consul.Check.ttl("10m"), check_id=f"{name}-hb", notes="beat", service_id=sid)

    check = client.agent.checks()[cid]
    assert check["CheckID"] == cid
    assert check["Name"] == f"{name} heartbeat"
    assert check["Notes"] == "beat"
    assert check["ServiceID"] == sid
    assert check["ServiceName"] == name
    assert check["Status"] == "critical"

    assert client.agent.check.deregister(cid) is True
    assert cid not in client.agent.checks()


def test_node_level_check_has_empty_service_fields(client, agent_check):
    cid = agent_check(uniq("node-check"), consul.Check.ttl("10m"))
    check = client.agent.checks()[cid]
    assert check["CheckID"] == cid  # check_id defaults to the name
    assert check["ServiceID"] == ""
    assert check["ServiceName"] == ""


def test_ttl_update_of_unknown_check_is_404(client, trellis):
    missing = uniq("nocheck")
    assert client.agent.check.ttl_pass(missing) is False
    resp = raw_request(trellis.base_url, "PUT", f"/v1/agent/check/pass/{missing}")
    assert resp.status == 404


# --------------------------------------------------------------------------
# Connect sidecars


@pytest.mark.parametrize("connect_key", ["sidecar_service", "SidecarService"])
def test_sidecar_registration_defaults(client, agent_service, connect_key):
    name = uniq("api")
    sid = agent_service(name, service_id=f"{name}-1", address="127.0.0.1", port=8080, connect={connect_key: {}})

    services = client.agent.services()
    proxy_id = f"{sid}-sidecar-proxy"
    assert proxy_id in services, sorted(services)
    proxy = services[proxy_id]
    assert proxy["ID"] == proxy_id
    assert proxy["Service"] == f"{name}-sidecar-proxy"
    assert proxy["Kind"] == "connect-proxy"
    assert proxy["Address"] == "127.0.0.1"  # inherited from the parent
    assert SIDECAR_MIN_PORT <= proxy["Port"] <= SIDECAR_MAX_PORT
    assert proxy["Proxy"]["DestinationServiceName"] == name
    assert proxy["Proxy"]["DestinationServiceID"] == sid
    assert proxy["Proxy"]["LocalServiceAddress"] == "127.0.0.1"
    assert proxy["Proxy"]["LocalServicePort"] == 8080

    # The parent is still a plain service.
    assert services[sid]["Service"] == name
    assert services[sid].get("Kind", "") == ""


def test_sidecars_get_distinct_ports(client, agent_service):
    name = uniq("pair")
    a = agent_service(name, service_id=f"{name}-a", port=8001, connect={"sidecar_service": {}})
    b = agent_service(name, service_id=f"{name}-b", port=8002, connect={"sidecar_service": {}})
    services = client.agent.services()
    port_a = services[f"{a}-sidecar-proxy"]["Port"]
    port_b = services[f"{b}-sidecar-proxy"]["Port"]
    assert port_a != port_b
    for port in (port_a, port_b):
        assert SIDECAR_MIN_PORT <= port <= SIDECAR_MAX_PORT
    assert services[f"{a}-sidecar-proxy"]["Proxy"]["LocalServicePort"] == 8001
    assert services[f"{b}-sidecar-proxy"]["Proxy"]["LocalServicePort"] == 8002


def test_sidecar_explicit_port_and_local_service_port(client, agent_service):
    name = uniq("explicit")
    sid = agent_service(
        name,
        service_id=f"{name}-1",
        port=8080,
        connect={"SidecarService": {"Port": 20555, "Proxy": {"LocalServicePort": 9090}}},
    )
    proxy = client.agent.services()[f"{sid}-sidecar-proxy"]
    assert proxy["Port"] == 20555
    assert proxy["Proxy"]["LocalServicePort"] == 9090
    assert proxy["Proxy"]["DestinationServiceName"] == name
    assert proxy["Proxy"]["DestinationServiceID"] == sid


def test_sidecar_copies_parent_meta_and_tags(client, agent_service):
    name = uniq("metasc")
    sid = agent_service(
        name, service_id=f"{name}-1", port=8080, tags=["blue"], meta={"team": "core"}, connect={"sidecar_service": {}}
    )
    proxy = client.agent.services()[f"{sid}-sidecar-proxy"]
    assert proxy["Meta"] == {"team": "core"}
    assert proxy["Tags"] == ["blue"]


def test_sidecar_gets_default_checks(client, agent_service):
    name = uniq("scchk")
    sid = agent_service(name, service_id=f"{name}-1", address="127.0.0.1", port=8080, connect={"sidecar_service": {}})
    proxy_id = f"{sid}-sidecar-proxy"
    names = {c["Name"] for c in client.agent.checks().values() if c["ServiceID"] == proxy_id}
    assert names == {"Connect Sidecar Listening", f"Connect Sidecar Aliasing {sid}"}


def test_deregistering_parent_removes_sidecar(client, agent_service, node_name):
    name = uniq("parent")
    sid = agent_service(name, service_id=f"{name}-1", port=8080, connect={"sidecar_service": {}})
    proxy_id = f"{sid}-sidecar-proxy"
    assert proxy_id in client.agent.services()
    # Wait for anti-entropy to put both in the catalog first.
    wait_until(
        lambda: client.catalog.node(node_name)[1]["Services"],
        lambda svcs: sid in svcs and proxy_id in svcs,
        what="parent and sidecar in catalog",
    )

    assert client.agent.service.deregister(sid) is True
    services = client.agent.services()
    assert sid not in services
    assert proxy_id not in services
    assert not [c for c in client.agent.checks().values() if c["ServiceID"] in (sid, proxy_id)]
    wait_until(
        lambda: client.catalog.node(node_name)[1]["Services"],
        lambda svcs: sid not in svcs and proxy_id not in svcs,
        what="parent and sidecar gone from catalog",
    )


def test_register_connect_proxy_directly(client, agent_service):
    dest = uniq("dest")
    proxy_name = f"{dest}-proxy"
    pid = agent_service(
        proxy_name,
        service_id=proxy_name,
        port=21999,
        kind="connect-proxy",
        proxy={"DestinationServiceName": dest, "LocalServicePort": 9000},
    )
    svc = client.agent.services()[pid]
    assert svc["Kind"] == "connect-proxy"
    assert svc["Port"] == 21999
    assert svc["Proxy"]["DestinationServiceName"] == dest
    assert svc["Proxy"]["LocalServicePort"] == 9000
