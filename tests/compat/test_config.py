"""Config entry endpoints, driven through py-consul 1.8.0.

Covers: config.set / config.get / config.list / config.delete for
service-defaults, proxy-defaults and service-intentions; Kind/Name and
CreateIndex/ModifyIndex bookkeeping; check-and-set (cas) on write and
delete; 404 for a missing entry; rejection of unknown kinds and of
proxy-defaults names other than "global"; intention source normalisation
(Type, Precedence, ordering by precedence).

Wire format (py-consul): PUT /v1/config with the body {..., "Kind", "Name"}
(and ?cas=N); GET /v1/config/<kind>/<name>; GET /v1/config/<kind>;
DELETE /v1/config/<kind>/<name> (and ?cas=N).
Note: py-consul's config.get uses CB.json(allow_404=True), so a 404 comes
back as ``None`` rather than raising consul.NotFound; the status code itself
is checked with a raw request.
"""

from __future__ import annotations

import consul
import pytest

from compat_util import raw_request, uniq


def _entry(client, kind, name):
    entry = client.config.get(kind, name)
    assert entry is not None, f"{kind}/{name} not found"
    return entry


def test_service_defaults_set_then_get(client, config_entry):
    name = uniq("sd")
    assert config_entry("service-defaults", name, {"Protocol": "http", "Meta": {"owner": "team-a"}}) is True

    entry = _entry(client, "service-defaults", name)
    assert entry["Kind"] == "service-defaults"
    assert entry["Name"] == name
    assert entry["Protocol"] == "http"
    assert entry["Meta"] == {"owner": "team-a"}
    assert isinstance(entry["CreateIndex"], int) and entry["CreateIndex"] >= 1
    assert entry["ModifyIndex"] == entry["CreateIndex"]


def test_update_bumps_modify_index_only(client, config_entry):
    name = uniq("sd-upd")
    config_entry("service-defaults", name, {"Protocol": "tcp"})
    first = _entry(client, "service-defaults", name)

    assert config_entry("service-defaults", name, {"Protocol": "grpc"}) is True
    second = _entry(client, "service-defaults", name)
    assert second["Protocol"] == "grpc"
    assert second["CreateIndex"] == first["CreateIndex"]
    assert second["ModifyIndex"] > first["ModifyIndex"]


def test_list_by_kind(client, config_entry):
    names = [uniq("sd-list"), uniq("sd-list")]
    for name in names:
        config_entry("service-defaults", name, {"Protocol": "http"})
    entries = client.config.list("service-defaults")
    assert isinstance(entries, list)
    listed = {e["Name"]: e for e in entries}
    for name in names:
        assert listed[name]["Kind"] == "service-defaults"
        assert listed[name]["Protocol"] == "http"


def test_delete_then_get_is_404(client, config_entry, trellis):
    name = uniq("sd-del")
    config_entry("service-defaults", name, {"Protocol": "http"})
    assert client.config.delete("service-defaults", name) is True

    assert client.config.get("service-defaults", name) is None  # py-consul: 404 -> None
    resp = raw_request(trellis.base_url, "GET", f"/v1/config/service-defaults/{name}")
    assert resp.status == 404
    assert name not in [e["Name"] for e in client.config.list("service-defaults") or []]


def test_get_never_written_entry_is_404(client, trellis):
    name = uniq("sd-none")
    assert client.config.get("service-defaults", name) is None
    assert raw_request(trellis.base_url, "GET", f"/v1/config/service-defaults/{name}").status == 404


def test_delete_of_missing_entry_succeeds(client):
    assert client.config.delete("service-defaults", uniq("sd-never")) is True


def test_cas_on_set(client, config_entry):
    name = uniq("sd-cas")
    # cas=0 means "create only if absent".
    assert config_entry("service-defaults", name, {"Protocol": "http"}, cas=0) is True
    assert config_entry("service-defaults", name, {"Protocol": "grpc"}, cas=0) is False
    current = _entry(client, "service-defaults", name)
    assert current["Protocol"] == "http"

    stale = current["ModifyIndex"] + 1000
    assert config_entry("service-defaults", name, {"Protocol": "grpc"}, cas=stale) is False
    assert _entry(client, "service-defaults", name)["Protocol"] == "http"

    assert config_entry("service-defaults", name, {"Protocol": "grpc"}, cas=current["ModifyIndex"]) is True
    assert _entry(client, "service-defaults", name)["Protocol"] == "grpc"


def test_cas_on_delete(client, config_entry):
    name = uniq("sd-casdel")
    config_entry("service-defaults", name, {"Protocol": "http"})
    modify_index = _entry(client, "service-defaults", name)["ModifyIndex"]

    # With cas, py-consul returns the JSON boolean Consul answers with.
    assert client.config.delete("service-defaults", name, cas=modify_index + 1000) is False
    assert client.config.get("service-defaults", name) is not None
    assert client.config.delete("service-defaults", name, cas=modify_index) is True
    assert client.config.get("service-defaults", name) is None


def test_proxy_defaults_global(client, config_entry):
    assert config_entry("proxy-defaults", "global", {"Config": {"protocol": "http"}}) is True
    entry = _entry(client, "proxy-defaults", "global")
    assert entry["Kind"] == "proxy-defaults"
    assert entry["Name"] == "global"
    assert entry["Config"] == {"protocol": "http"}
    assert entry["ModifyIndex"] >= entry["CreateIndex"] >= 1
    assert "global" in [e["Name"] for e in client.config.list("proxy-defaults")]


def test_proxy_defaults_only_accepts_global(client, config_entry):
    with pytest.raises(consul.ConsulException):
        config_entry("proxy-defaults", uniq("not-global"), {"Config": {"protocol": "http"}})


def test_unknown_kind_is_rejected(client):
    with pytest.raises(consul.ConsulException) as err:
        client.config.set("no-such-kind", uniq("x"), {})
    assert str(err.value).startswith("400"), err.value


def test_service_intentions_roundtrip(client, config_entry):
    dest, src = uniq("dest"), uniq("src")
    assert config_entry("service-intentions", dest, {"Sources": [{"Name": src, "Action": "allow"}]}) is True

    entry = _entry(client, "service-intentions", dest)
    assert entry["Kind"] == "service-intentions"
    assert entry["Name"] == dest
    assert len(entry["Sources"]) == 1
    source = entry["Sources"][0]
    assert source["Name"] == src
    assert source["Action"] == "allow"
    assert source["Type"] == "consul"  # default source type
    assert source["Precedence"] == 9  # exact source -> exact destination
    assert entry["ModifyIndex"] >= entry["CreateIndex"] >= 1


def test_service_intentions_sources_sorted_by_precedence(client, config_entry):
    dest, src = uniq("dest"), uniq("src")
    config_entry(
        "service-intentions",
        dest,
        {"Sources": [{"Name": "*", "Action": "deny"}, {"Name": src, "Action": "allow"}]},
    )
    sources = _entry(client, "service-intentions", dest)["Sources"]
    assert [(s["Name"], s["Action"], s["Precedence"]) for s in sources] == [(src, "allow", 9), ("*", "deny", 8)]


def test_service_intentions_delete(client, config_entry):
    dest = uniq("dest")
    config_entry("service-intentions", dest, {"Sources": [{"Name": uniq("src"), "Action": "deny"}]})
    assert dest in [e["Name"] for e in client.config.list("service-intentions")]
    assert client.config.delete("service-intentions", dest) is True
    assert client.config.get("service-intentions", dest) is None
