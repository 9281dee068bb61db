"""Catalog endpoints, driven through py-consul 1.8.0.

Covers: catalog.datacenters, catalog.nodes, catalog.services (name -> tags,
the built-in "consul" service, index growth), catalog.service (fields, tag
filter, unknown name), catalog.node, catalog.register / catalog.deregister of
an external node with a service and a check, and catalog.connect (sidecar
proxies and Connect-native services).

Agent registrations reach the catalog through anti-entropy, so reads that
follow an agent write poll with ``wait_until`` (up to ~5 s).
Every catalog read returns ``(X-Consul-Index, data)``; py-consul raises if the
header is missing, so each call here also checks that header exists.
"""

from __future__ import annotations

from compat_util import uniq, wait_until

SIDECAR_MIN_PORT, SIDECAR_MAX_PORT = 21000, 21255
EXTERNAL_ADDR = "127.0.0.10"  # catalog-only data: nothing ever dials it


def _index(value: str) -> int:
    assert value.isdigit(), value
    return int(value)


def _catalog_service(client, name, **kwargs):
    return client.catalog.service(name, **kwargs)[1]


def test_datacenters_is_dc1(client):
    assert client.catalog.datacenters() == ["dc1"]


def test_nodes_lists_the_agent_node(client, node_name):
    index, nodes = client.catalog.nodes()
    assert _index(index) >= 1
    mine = [n for n in nodes if n["Node"] == node_name]
    assert len(mine) == 1, nodes
    assert mine[0]["Address"] == "127.0.0.1"
    assert mine[0]["Datacenter"] == "dc1"


def test_services_includes_consul_service(client):
    _, services = client.catalog.services()
    assert isinstance(services, dict)
    assert "consul" in services


def test_services_maps_name_to_union_of_tags(client, agent_service):
    name = uniq("tagged")
    agent_service(name, service_id=f"{name}-1", port=1, tags=["a", "b"])
    agent_service(name, service_id=f"{name}-2", port=2, tags=["b", "c"])
    services = wait_until(
        lambda: client.catalog.services()[1],
        lambda s: set(s.get(name) or []) == {"a", "b", "c"},
        what=f"{name} with tags a,b,c in catalog.services",
    )
    assert len(services[name]) == 3  # each tag once


def test_services_index_grows_after_registration(client, agent_service):
    before, _ = client.catalog.services()
    name = uniq("grow")
    agent_service(name, port=1)
    index, services = wait_until(
        client.catalog.services, lambda r: name in r[1], what=f"{name} in catalog.services"
    )
    assert _index(index) > _index(before)


def test_service_entries_have_consul_fields(client, agent_service, node_name):
    name = uniq("fields")
    sid = agent_service(name, service_id=f"{name}-1", address="127.0.0.1", port=8080, tags=["v1"], meta={"k": "v"})
    entries = wait_until(lambda: _catalog_service(client, name), lambda e: len(e) == 1, what=f"{name} in catalog")
    entry = entries[0]
    assert entry["Node"] == node_name
    assert entry["Address"] == "127.0.0.1"
    assert entry["Datacenter"] == "dc1"
    assert entry["ServiceID"] == sid
    assert entry["ServiceName"] == name
    assert entry["ServiceTags"] == ["v1"]
    assert entry["ServicePort"] == 8080
    assert entry["ServiceAddress"] == "127.0.0.1"
    assert entry["ServiceMeta"] == {"k": "v"}
    assert isinstance(entry["CreateIndex"], int) and isinstance(entry["ModifyIndex"], int)
    assert entry["ModifyIndex"] >= entry["CreateIndex"] >= 1


def test_service_tag_filter(client, agent_service):
    name = uniq("tagfilter")
    primary = agent_service(name, service_id=f"{name}-1", port=1, tags=["primary"])
    secondary = agent_service(name, service_id=f"{name}-2", port=2, tags=["secondary"])
    wait_until(lambda: _catalog_service(client, name), lambda e: len(e) == 2, what=f"two {name} instances")

    assert [e["ServiceID"] for e in _catalog_service(client, name, tag="primary")] == [primary]
    assert [e["ServiceID"] for e in _catalog_service(client, name, tag="secondary")] == [secondary]
    assert _catalog_service(client, name, tag="nope") == []


def test_unknown_service_is_empty_list(client):
    index, entries = client.catalog.service(uniq("nosuch"))
    assert entries == []
    assert _index(index) >= 1


def test_node_shows_its_services(client, agent_service, node_name):
    name = uniq("onnode")
    sid = agent_service(name, service_id=f"{name}-1", port=4321, tags=["t"])
    _, node = wait_until(
        lambda: client.catalog.node(node_name), lambda r: sid in r[1]["Services"], what=f"{sid} on {node_name}"
    )
    assert node["Node"]["Node"] == node_name
    assert node["Node"]["Address"] == "127.0.0.1"
    svc = node["Services"][sid]
    assert svc["ID"] == sid
    assert svc["Service"] == name
    assert svc["Port"] == 4321
    assert svc["Tags"] == ["t"]


def test_register_external_node_with_service_and_check(client, catalog_node):
    node = uniq("ext-node")
    name = uniq("ext-svc")
    catalog_node(
        node,
        EXTERNAL_ADDR,
        service={"Service": name, "ID": f"{name}-1", "Tags": ["ext"], "Port": 5000},
        check={
            "Node": node,
            "CheckID": f"{name}-check",
            "Name": "external check",
            "Status": "passing",
            "ServiceID": f"{name}-1",
        },
    )

    _, nodes = client.catalog.nodes()
    assert [n["Address"] for n in nodes if n["Node"] == node] == [EXTERNAL_ADDR]

    entries = _catalog_service(client, name)
    assert len(entries) == 1
    assert entries[0]["Node"] == node
    assert entries[0]["Address"] == EXTERNAL_ADDR
    assert entries[0]["ServiceID"] == f"{name}-1"
    assert entries[0]["ServiceTags"] == ["ext"]
    assert entries[0]["ServicePort"] == 5000
    # No ServiceAddress given: it stays empty (clients fall back to Address).
    assert entries[0]["ServiceAddress"] == ""

    _, node_info = client.catalog.node(node)
    assert node_info["Node"]["Address"] == EXTERNAL_ADDR
    assert list(node_info["Services"]) == [f"{name}-1"]

    _, checks = client.health.checks(name)
    assert [(c["CheckID"], c["Status"], c["Node"]) for c in checks] == [(f"{name}-check", "passing", node)]


def test_catalog_service_id_defaults_to_service_name(client, catalog_node):
    node = uniq("ext-node")
    name = uniq("ext-noid")
    catalog_node(node, EXTERNAL_ADDR, service={"Service": name, "Port": 1})
    assert [e["ServiceID"] for e in _catalog_service(client, name)] == [name]


def test_deregister_service_then_node(client, catalog_node):
    node = uniq("ext-node")
    name = uniq("ext-dereg")
    catalog_node(node, EXTERNAL_ADDR, service={"Service": name, "ID": f"{name}-1", "Port": 1})
    assert len(_catalog_service(client, name)) == 1

    assert client.catalog.deregister(node, service_id=f"{name}-1") is True
    assert _catalog_service(client, name) == []
    assert node in [n["Node"] for n in client.catalog.nodes()[1]]  # node itself stays

    assert client.catalog.deregister(node) is True
    assert node not in [n["Node"] for n in client.catalog.nodes()[1]]


def test_connect_returns_sidecar_for_destination(client, agent_service):
    name = uniq("meshsvc")
    sid = agent_service(name, service_id=f"{name}-1", address="127.0.0.1", port=8080, connect={"sidecar_service": {}})
    proxy_id = f"{sid}-sidecar-proxy"

    _, entries = wait_until(
        lambda: client.catalog.connect(name), lambda r: len(r[1]) == 1, what=f"sidecar of {name} in catalog.connect"
    )
    entry = entries[0]
    assert entry["ServiceKind"] == "connect-proxy"
    assert entry["ServiceID"] == proxy_id
    assert entry["ServiceName"] == f"{name}-sidecar-proxy"
    assert SIDECAR_MIN_PORT <= entry["ServicePort"] <= SIDECAR_MAX_PORT
    assert entry["ServiceProxy"]["DestinationServiceName"] == name
    assert entry["ServiceProxy"]["DestinationServiceID"] == sid
    assert entry["ServiceProxy"]["LocalServicePort"] == 8080

    # The plain service query returns the app, not its proxy...
    assert [e["ServiceID"] for e in _catalog_service(client, name)] == [sid]
    # ...and the proxy is a service of its own name.
    assert [e["ServiceID"] for e in _catalog_service(client, f"{name}-sidecar-proxy")] == [proxy_id]


def test_connect_returns_native_service_itself(client, agent_service):
    name = uniq("native")
    sid = agent_service(name, service_id=f"{name}-1", port=8443, connect={"Native": True})
    _, entries = wait_until(
        lambda: client.catalog.connect(name), lambda r: len(r[1]) == 1, what=f"{name} in catalog.connect"
    )
    assert entries[0]["ServiceID"] == sid
    assert entries[0]["ServiceName"] == name
    assert entries[0]["ServiceConnect"]["Native"] is True


def test_connect_for_service_without_mesh_is_empty(client, agent_service):
    name = uniq("plain")
    agent_service(name, port=1)
    wait_until(lambda: _catalog_service(client, name), lambda e: len(e) == 1, what=f"{name} in catalog")
    assert client.catalog.connect(name)[1] == []

