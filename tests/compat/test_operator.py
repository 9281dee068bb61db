"""Operator endpoints, driven through py-consul 1.8.0.

Covers: operator.raft_config (the Raft configuration of the dev agent's one-server cluster, in
Consul's shape) and operator.raft_remove_peer refusals (no peer named, an unknown address, the
only voter), each a 400 that changes nothing.
"""

from __future__ import annotations

import consul
import pytest


def test_raft_config_lists_the_one_voter_as_leader(client):
    config = client.operator.raft_config()
    servers = config["Servers"]
    assert len(servers) == 1, config
    me = servers[0]
    assert me["Leader"] is True
    assert me["Voter"] is True
    assert me["ProtocolVersion"] == "3"
    assert me["Address"] == client.status.leader()
    assert me["ID"] and me["Node"]
    assert me["LastIndex"] > 0
    assert isinstance(config["Index"], int)


def test_raft_remove_peer_refusals_change_nothing(client):
    before = client.operator.raft_config()
    with pytest.raises(consul.exceptions.BadRequest):
        client.operator.raft_remove_peer()
    with pytest.raises(consul.exceptions.BadRequest, match="not in the Raft configuration"):
        client.operator.raft_remove_peer(address="127.0.0.9:1")
    only = before["Servers"][0]
    with pytest.raises(consul.exceptions.BadRequest, match="only voter"):
        client.operator.raft_remove_peer(peer_id=only["ID"])
    after = client.operator.raft_config()
    assert [s["ID"] for s in after["Servers"]] == [only["ID"]]
    assert after["Servers"][0]["Leader"] is True
