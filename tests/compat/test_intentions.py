"""Intentions and Connect authorization, driven through py-consul 1.8.0.

Covers: connect.intentions.upsert / read / delete (the exact-match API) and
the shape of an intention read back (namespaces, SourceType, Precedence 9/8/6/5
for exact/wildcard pairs, indexes, L7 Permissions with upper-cased Methods);
that the exact API and ``service-intentions`` config entries are one set of data
(one entry per destination, one source per intention, the entry's Meta and
indexes on each intention, deleting the last source deletes the entry); Meta
refused on the exact API; connect.intentions.list (precedence order with ties by name,
``?filter`` on the documented selectors, an unknown selector refused);
connect.intentions.check (allow, deny, L7 counts as deny, default allow);
connect.intentions.match by destination and by source (evaluation order);
agent.connect.authorize (L4 allow/deny, L7, the ACL default, following
intention changes, bad input); invalid ``service-intentions`` entries refused
without changing anything, L7 Permissions refused for a tcp destination, an
uncompiled PathRegex accepted; the X-Consul-Default-ACL-Policy header.

Wire format (py-consul): PUT /v1/connect/intentions/exact?source=&destination=
with {"SourceType", "Action" | "Permissions", "Description", "Meta"} (py-consul
leaves out empty Action/Description/Meta/Permissions); GET and DELETE on the same
path; GET /v1/connect/intentions[?filter=]; GET /v1/connect/intentions/check?
source=&destination= (py-consul returns only ``Allowed``); GET
/v1/connect/intentions/match?by=&name= -> {name: [intention, ...]}; PUT
/v1/agent/connect/authorize with {"Target", "ClientCertURI", "ClientCertSerial"}
-> {"Authorized", "Reason"}; PUT /v1/config for service-intentions entries.
py-consul's upsert is ``upsert(source, destination, token=None, action=None,
source_type="consul", description="", meta=None, permissions=None)``; a 400
raises consul.exceptions.BadRequest("400 <body>"), a 5xx ConsulException("5xx
<body>"), and ``read`` returns None on 404.

Consul behaviours pinned here from its source (agent/structs/intention.go,
config_entry_intentions.go, agent/consul/state/config_entry.go,
agent/agent_endpoint.go):
- An intention's JSON leaves out empty ID, Description, Action, Permissions and
  Meta, and zero CreatedAt/UpdatedAt; the tests accept either absent or empty.
- Authorize's Reason names the intention as ``<ns>/<src> => <ns>/<dst>
  (Precedence: N, Action: ALLOW|DENY)`` (``Permissions: N`` for L7); in CE the
  namespace is ``default``.
- Validation errors raised inside Consul's RPC layer (a bad service-intentions
  entry, Meta on the exact API, a ?filter that does not compile) reach HTTP as
  untyped errors, so Consul answers 500 with the message, where a 400 would be
  the obvious choice; the tests accept 400 or 500 and check the message.
  Errors Consul raises in the HTTP handler itself (authorize) are 400.
- L7 Permissions need an HTTP-like protocol on the destination (Consul checks the
  service graph on write), so tests writing L7 intentions first set
  service-defaults Protocol "http" for the destination; Consul does not compile
  PathRegex on write.

ACLs are off, so with no matching intention everything is allowed.
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterator

import consul
import pytest

from compat_util import raw_request, uniq, wait_until

KIND = "service-intentions"
# How long the agent may take to reflect an intention change in authorize
# (its view of a target's intentions is refreshed in the background).
AUTHZ_TIMEOUT = 3.0
# The leader initialises the CA shortly after election; the trust domain is
# empty until then.
CA_READY_TIMEOUT = 15.0
SERIAL = "0a:1b:2c:3d"
L7_PERMISSIONS = [{"Action": "allow", "HTTP": {"PathPrefix": "/api", "Methods": ["GET"]}}]


# --------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def intention(client: consul.Consul) -> Iterator[Any]:
    """``intention(source, destination, action=None, **upsert_kwargs)`` returns
    what ``connect.intentions.upsert`` returns; every pair is deleted at teardown
    (the pair is recorded before the write, so a write that should have failed
    but did not is cleaned up too)."""
    pairs: list[tuple[str, str]] = []

    def upsert(source: str, destination: str, action: str | None = None, **kwargs: Any) -> bool:
        if (source, destination) not in pairs:
            pairs.append((source, destination))
        return client.connect.intentions.upsert(source, destination, action=action, **kwargs)

    yield upsert
    for source, destination in reversed(pairs):
        try:
            client.connect.intentions.delete(source, destination)
        except consul.ConsulException:
            pass


@pytest.fixture(scope="module")
def trust_domain(client: consul.Consul) -> str:
    roots = wait_until(
        client.connect.ca.roots,
        lambda r: bool(r and r.get("TrustDomain")),
        timeout=CA_READY_TIMEOUT,
        interval=0.2,
        what="a CA trust domain",
    )
    return roots["TrustDomain"]


@pytest.fixture(scope="module")
def datacenter(client: consul.Consul) -> str:
    return client.agent.self()["Config"]["Datacenter"]


@pytest.fixture
def service_uri(trust_domain: str, datacenter: str) -> Any:
    """``service_uri(name)``: the SPIFFE ID of a service's leaf certificate."""
    return lambda name: f"spiffe://{trust_domain}/ns/default/dc/{datacenter}/svc/{name}"


def _http_service(config_entry: Any, name: str) -> None:
    """Make ``name`` an HTTP service, which Consul requires before it accepts
    L7 Permissions for it. Tests list ``config_entry`` before ``intention`` so
    that their intentions are deleted first: Consul also refuses to drop the
    protocol back to tcp while an L7 intention for the service exists."""
    assert config_entry("service-defaults", name, {"Protocol": "http"}) is True


def _read(client: consul.Consul, source: str, destination: str) -> dict[str, Any]:
    found = client.connect.intentions.read(source, destination)
    assert found is not None, f"intention {source} => {destination} not found"
    return found


def _pairs(intentions: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["SourceName"], i["DestinationName"]) for i in intentions]


def _listed(client: consul.Consul, filter_expr: str) -> list[tuple[str, str]]:
    return _pairs(client.connect.intentions.list(filter_expr=filter_expr) or [])


def _assert_rejected(err: BaseException, *fragments: str) -> None:
    """A refused write or query: 400 (Trellis) or 500 (Consul, for errors raised
    in its RPC layer), with a message naming the problem."""
    assert isinstance(err, consul.ConsulException), err
    text = str(err)
    status = text.split(" ", 1)[0]
    assert status in ("400", "500"), f"expected 400 or 500, got: {text}"
    if status == "400":
        assert isinstance(err, consul.exceptions.BadRequest), type(err)
    for fragment in fragments:
        assert fragment.lower() in text.lower(), f"{fragment!r} not in {text!r}"


def _reason(kind: str, source: str, destination: str, precedence: int, detail: str) -> str:
    """Consul's Reason for a matched intention (CE: namespace ``default``)."""
    return f"Matched {kind} intention: default/{source} => default/{destination} (Precedence: {precedence}, {detail})"


def _assert_reason(reason: str, kind: str, source: str, destination: str, precedence: int, detail: str) -> None:
    """The Reason names the matched intention. The namespace prefix is optional
    here; test_authorize_reason_names_namespaces pins Consul's exact text."""
    pattern = (
        rf"Matched {kind} intention: (default/)?{re.escape(source)} => (default/)?{re.escape(destination)} "
        rf"\(Precedence: {precedence}, {re.escape(detail)}\)"
    )
    assert re.fullmatch(pattern, reason), reason


def _authorize(client: consul.Consul, target: str, uri: str) -> dict[str, Any]:
    return client.agent.connect.authorize(target, uri, SERIAL)


def _authorize_until(client: consul.Consul, target: str, uri: str, authorized: bool) -> dict[str, Any]:
    return wait_until(
        lambda: _authorize(client, target, uri),
        lambda r: r["Authorized"] is authorized,
        timeout=AUTHZ_TIMEOUT,
        what=f"Authorized == {authorized} for {uri} -> {target}",
    )


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


# --------------------------------------------------------------------------
# exact API and the shape of an intention


def test_upsert_then_read_exact(client, intention):
    src, dst = uniq("ixn-src"), uniq("ixn-dst")
    assert intention(src, dst, action="allow", description="web may call db") is True

    ixn = _read(client, src, dst)
    assert ixn.get("ID", "") == ""  # only the legacy POST assigns IDs
    assert ixn["SourceNS"] == "default"
    assert ixn["DestinationNS"] == "default"
    assert ixn["SourceName"] == src
    assert ixn["DestinationName"] == dst
    assert ixn["SourceType"] == "consul"
    assert ixn["Action"] == "allow"
    assert ixn["Description"] == "web may call db"
    assert "Permissions" not in ixn
    assert ixn.get("Meta") in (None, {})
    assert ixn["Precedence"] == 9
    for stamp in ("CreatedAt", "UpdatedAt"):  # Consul leaves zero times out
        assert stamp not in ixn or isinstance(ixn[stamp], str)
    assert isinstance(ixn["CreateIndex"], int) and ixn["CreateIndex"] >= 1
    assert ixn["ModifyIndex"] == ixn["CreateIndex"]


def test_upsert_replaces_the_pair(client, intention):
    src, dst = uniq("ixn-src"), uniq("ixn-dst")
    intention(src, dst, action="allow", description="first")
    first = _read(client, src, dst)

    assert intention(src, dst, action="deny") is True
    second = _read(client, src, dst)
    assert second["Action"] == "deny"
    assert second.get("Description", "") == ""  # replaced, not merged
    assert second["CreateIndex"] == first["CreateIndex"]
    assert second["ModifyIndex"] > first["ModifyIndex"]
    assert len(client.config.get(KIND, dst)["Sources"]) == 1


def test_l7_intention_read_back(client, config_entry, intention):
    src, dst = uniq("ixn-src"), uniq("ixn-l7")
    _http_service(config_entry, dst)
    assert intention(src, dst, permissions=L7_PERMISSIONS) is True

    ixn = _read(client, src, dst)
    assert "Action" not in ixn
    assert len(ixn["Permissions"]) == 1
    perm = ixn["Permissions"][0]
    assert perm["Action"] == "allow"
    assert perm["HTTP"]["PathPrefix"] == "/api"
    assert perm["HTTP"]["Methods"] == ["GET"]
    assert ixn["Precedence"] == 9


def test_l7_methods_are_upper_cased_on_write(client, config_entry):
    # Consul's ServiceIntentionsConfigEntry.normalize upper-cases Methods.
    src, dst = uniq("ixn-src"), uniq("ixn-l7")
    _http_service(config_entry, dst)
    body = {"Sources": [{"Name": src, "Permissions": [{"Action": "deny", "HTTP": {"Methods": ["get", "Post"]}}]}]}
    assert config_entry(KIND, dst, body) is True
    entry = client.config.get(KIND, dst)
    assert entry["Sources"][0]["Permissions"][0]["HTTP"]["Methods"] == ["GET", "POST"]
    assert _read(client, src, dst)["Permissions"][0]["HTTP"]["Methods"] == ["GET", "POST"]


def test_precedence_of_exact_and_wildcard_pairs(client, intention):
    src, dst = uniq("ixn-src"), uniq("ixn-dst")
    expected = {(src, dst): 9, ("*", dst): 8, (src, "*"): 6, ("*", "*"): 5}
    for source, destination in expected:
        assert intention(source, destination, action="allow") is True

    for (source, destination), precedence in expected.items():
        ixn = _read(client, source, destination)
        assert (ixn["SourceName"], ixn["DestinationName"]) == (source, destination)
        assert (ixn["SourceNS"], ixn["DestinationNS"]) == ("default", "default")
        assert ixn["Precedence"] == precedence, f"{source} => {destination}"


# --------------------------------------------------------------------------
# one set of data: exact API and service-intentions config entries


def test_exact_writes_form_one_entry_per_destination(client, intention):
    a, b, dst = uniq("ixn-a"), uniq("ixn-b"), uniq("ixn-dst")
    intention(a, dst, action="allow", description="from a")
    intention(b, dst, action="deny")

    entry = client.config.get(KIND, dst)
    assert entry is not None
    assert entry["Kind"] == KIND
    assert entry["Name"] == dst
    sources = {s["Name"]: s for s in entry["Sources"]}
    assert sorted(sources) == sorted([a, b])
    assert sources[a]["Action"] == "allow"
    assert sources[a]["Description"] == "from a"
    assert sources[b]["Action"] == "deny"
    for source in sources.values():
        assert source["Type"] == "consul"
        assert source["Precedence"] == 9
    # Each intention carries its entry's raft indexes.
    for name in (a, b):
        ixn = _read(client, name, dst)
        assert (ixn["CreateIndex"], ixn["ModifyIndex"]) == (entry["CreateIndex"], entry["ModifyIndex"])


def test_config_entry_sources_read_back_as_intentions(client, config_entry):
    src, dst = uniq("ixn-src"), uniq("ixn-dst")
    body = {"Sources": [{"Name": "*", "Action": "deny"}, {"Name": src, "Action": "allow", "Description": "via entry"}]}
    assert config_entry(KIND, dst, body) is True
    entry = client.config.get(KIND, dst)

    exact = _read(client, src, dst)
    assert exact["Action"] == "allow"
    assert exact["Description"] == "via entry"
    assert exact["Precedence"] == 9
    assert exact["SourceType"] == "consul"
    wildcard = _read(client, "*", dst)
    assert wildcard["Action"] == "deny"
    assert wildcard["Precedence"] == 8
    for ixn in (exact, wildcard):
        assert (ixn["CreateIndex"], ixn["ModifyIndex"]) == (entry["CreateIndex"], entry["ModifyIndex"])

    assert _listed(client, f'DestinationName == "{dst}"') == [(src, dst), ("*", dst)]


def test_entry_meta_is_the_meta_of_its_intentions(client, config_entry):
    # ServiceIntentionsConfigEntry.ToIntention: Meta = the entry's Meta (the
    # source's LegacyMeta only for intentions made by the legacy POST).
    src, dst = uniq("ixn-src"), uniq("ixn-dst")
    body = {"Meta": {"owner": "team-a"}, "Sources": [{"Name": src, "Action": "allow"}]}
    assert config_entry(KIND, dst, body) is True

    assert client.config.get(KIND, dst)["Meta"] == {"owner": "team-a"}
    assert _read(client, src, dst)["Meta"] == {"owner": "team-a"}
    assert _listed(client, f'Meta.owner == "team-a" and DestinationName == "{dst}"') == [(src, dst)]


def test_deleting_the_last_source_deletes_the_entry(client, intention):
    a, b, dst = uniq("ixn-a"), uniq("ixn-b"), uniq("ixn-dst")
    intention(a, dst, action="allow")
    intention(b, dst, action="allow")

    assert client.connect.intentions.delete(a, dst) is True
    entry = client.config.get(KIND, dst)
    assert entry is not None
    assert [s["Name"] for s in entry["Sources"]] == [b]
    assert _listed(client, f'DestinationName == "{dst}"') == [(b, dst)]

    assert client.connect.intentions.delete(b, dst) is True
    assert client.config.get(KIND, dst) is None
    assert dst not in [e["Name"] for e in client.config.list(KIND) or []]
    assert _listed(client, f'DestinationName == "{dst}"') == []


def test_meta_is_refused_on_the_exact_api(client, intention):
    src, dst = uniq("ixn-src"), uniq("ixn-dst")
    with pytest.raises(consul.ConsulException) as err:
        intention(src, dst, action="allow", meta={"owner": "team-a"})
    _assert_rejected(err.value, "Meta must not be specified")

    assert client.config.get(KIND, dst) is None
    assert _listed(client, f'DestinationName == "{dst}"') == []


# --------------------------------------------------------------------------
# list


def test_list_is_in_precedence_order_with_ties_by_name(client, intention):
    base = uniq("ixn-ord")
    a, b, d1, d2 = f"{base}-a", f"{base}-b", f"{base}-d1", f"{base}-d2"
    # Written out of order on purpose.
    writes = [("*", "*"), (b, d1), (a, "*"), (a, d2), ("*", d1), (a, d1)]
    for source, destination in writes:
        intention(source, destination, action="allow")

    mine = set(writes)
    listed = [p for p in _pairs(client.connect.intentions.list()) if p in mine]
    assert listed == [(a, d1), (a, d2), (b, d1), ("*", d1), (a, "*"), ("*", "*")]

    everything = client.connect.intentions.list()
    precedences = [i["Precedence"] for i in everything]
    assert precedences == sorted(precedences, reverse=True)


@pytest.mark.parametrize(
    "expr, expected",
    [
        pytest.param('SourceName == "{src}"', {("src", "dst"), ("src", "dst2")}, id="source-name"),
        pytest.param('Precedence == 8 and DestinationName == "{dst}"', {("*", "dst")}, id="precedence"),
        pytest.param('Action == deny and DestinationName == "{dst}"', {("src", "dst")}, id="action-and-destination"),
        pytest.param('Description == "{desc}"', {("src", "dst")}, id="description"),
        pytest.param(
            'DestinationName == "{dst}" and SourceNS == default and DestinationNS == default and SourceType == consul',
            {("src", "dst"), ("*", "dst")},
            id="namespaces-and-type",
        ),
        pytest.param('SourceName == "{src}" and ID == ""', {("src", "dst"), ("src", "dst2")}, id="id"),
        pytest.param('SourceName == "{src}" and Meta is empty', {("src", "dst"), ("src", "dst2")}, id="meta"),
        pytest.param('SourceName == "{src}" and DestinationName != "{dst}"', {("src", "dst2")}, id="not-equal"),
    ],
)
def test_list_filter(client, intention, expr, expected):
    names = {"src": uniq("ixn-src"), "dst": uniq("ixn-dst"), "dst2": uniq("ixn-dst2"), "*": "*"}
    desc = uniq("desc")
    intention(names["src"], names["dst"], action="deny", description=desc)
    intention(names["src"], names["dst2"], action="allow")
    intention("*", names["dst"], action="allow")

    filter_expr = expr.format(src=names["src"], dst=names["dst"], desc=desc)
    got = _listed(client, filter_expr)
    assert sorted(got) == sorted((names[s], names[d]) for s, d in expected), filter_expr
    assert len(got) == len(set(got))


def test_list_filter_with_unknown_selector_is_refused(client):
    with pytest.raises(consul.ConsulException) as err:
        client.connect.intentions.list(filter_expr='NoSuchField == "x"')
    _assert_rejected(err.value, "NoSuchField")


# --------------------------------------------------------------------------
# check and match


def test_check(client, config_entry, intention):
    src = uniq("ixn-src")
    allowed, denied, l7, unmatched = (uniq(f"ixn-{kind}") for kind in ("allow", "deny", "l7", "none"))
    _http_service(config_entry, l7)
    intention(src, allowed, action="allow")
    intention(src, denied, action="deny")
    intention(src, l7, permissions=L7_PERMISSIONS)

    assert client.connect.intentions.check(src, allowed) is True
    assert client.connect.intentions.check(src, denied) is False
    assert client.connect.intentions.check(src, l7) is False  # L7 counts as deny
    assert client.connect.intentions.check(src, unmatched) is True  # default: allow (ACLs off)
    # Another source does not match the exact intentions.
    assert client.connect.intentions.check(uniq("ixn-other"), denied) is True


def test_check_uses_wildcard_intentions(client, intention):
    src, dst = uniq("ixn-src"), uniq("ixn-dst")
    intention("*", dst, action="deny")
    assert client.connect.intentions.check(src, dst) is False
    intention(src, dst, action="allow")  # the exact pair wins over * => dst
    assert client.connect.intentions.check(src, dst) is True


def test_match_by_destination(client, intention):
    web, db, other = uniq("ixn-web"), uniq("ixn-db"), uniq("ixn-other")
    writes = [("*", "*"), (web, "*"), ("*", db), (web, db), (other, uniq("ixn-elsewhere"))]
    for source, destination in writes:
        intention(source, destination, action="allow")

    result = client.connect.intentions.match("destination", db)
    assert list(result) == [db]
    mine = set(writes)
    got = [p for p in _pairs(result[db]) if p in mine]
    assert got == [(web, db), ("*", db), (web, "*"), ("*", "*")]
    precedences = [i["Precedence"] for i in result[db]]
    assert precedences == sorted(precedences, reverse=True)


def test_match_by_source(client, intention):
    web, db, db2 = uniq("ixn-web"), uniq("ixn-db"), uniq("ixn-db2")
    writes = [("*", "*"), (web, "*"), ("*", db), (web, db), (web, db2), (uniq("ixn-other"), db)]
    for source, destination in writes:
        intention(source, destination, action="allow")

    result = client.connect.intentions.match("source", web)
    assert list(result) == [web]
    mine = set(writes)
    got = [p for p in _pairs(result[web]) if p in mine]
    assert got == [(web, db), (web, db2), ("*", db), (web, "*"), ("*", "*")]


# --------------------------------------------------------------------------
# authorize


def test_authorize_allow(client, intention, service_uri):
    web, db = uniq("ixn-web"), uniq("ixn-db")
    intention(web, db, action="allow")
    result = _authorize_until(client, db, service_uri(web), True)
    _assert_reason(result["Reason"], "L4", web, db, 9, "Action: ALLOW")


def test_authorize_deny(client, intention, service_uri):
    web, db = uniq("ixn-web"), uniq("ixn-db")
    intention(web, db, action="deny")
    result = _authorize_until(client, db, service_uri(web), False)
    _assert_reason(result["Reason"], "L4", web, db, 9, "Action: DENY")


def test_authorize_l7_intention_is_not_authorized(client, config_entry, intention, service_uri):
    web, db = uniq("ixn-web"), uniq("ixn-db")
    _http_service(config_entry, db)
    intention(web, db, permissions=L7_PERMISSIONS)
    result = _authorize_until(client, db, service_uri(web), False)
    _assert_reason(result["Reason"], "L7", web, db, 9, "Permissions: 1")


def test_authorize_reason_names_namespaces(client, config_entry, intention, service_uri):
    # Consul's Intention.String(): "<SourceNS>/<SourceName> => <DestinationNS>/
    # <DestinationName> (Precedence: N, Action: ALLOW)" -- the namespace is always
    # there, "default" in CE (partitions are empty in CE and left out).
    web, db, api = uniq("ixn-web"), uniq("ixn-db"), uniq("ixn-api")
    _http_service(config_entry, api)
    intention(web, db, action="allow")
    intention("*", db, action="deny")
    intention(web, api, permissions=L7_PERMISSIONS)

    allowed = _authorize_until(client, db, service_uri(web), True)
    assert allowed["Reason"] == _reason("L4", web, db, 9, "Action: ALLOW")
    denied = _authorize_until(client, db, service_uri(uniq("ixn-other")), False)
    assert denied["Reason"] == _reason("L4", "*", db, 8, "Action: DENY")
    l7 = _authorize_until(client, api, service_uri(web), False)
    assert l7["Reason"] == _reason("L7", web, api, 9, "Permissions: 1")


def test_authorize_without_a_match_uses_the_acl_default(client, service_uri):
    result = _authorize(client, uniq("ixn-db"), service_uri(uniq("ixn-web")))
    assert result == {"Authorized": True, "Reason": "Default behavior configured by ACLs"}


def test_authorize_follows_intention_changes(client, intention, service_uri):
    web, db = uniq("ixn-web"), uniq("ixn-db")
    uri = service_uri(web)
    intention(web, db, action="allow")
    _authorize_until(client, db, uri, True)

    started = time.monotonic()
    intention(web, db, action="deny")
    denied = _authorize_until(client, db, uri, False)
    _assert_reason(denied["Reason"], "L4", web, db, 9, "Action: DENY")
    assert time.monotonic() - started <= AUTHZ_TIMEOUT + 1

    intention("*", db, action="allow")  # lower precedence: the exact deny still wins
    assert _authorize(client, db, uri)["Authorized"] is False

    assert client.connect.intentions.delete(web, db) is True
    allowed = _authorize_until(client, db, uri, True)
    _assert_reason(allowed["Reason"], "L4", "*", db, 8, "Action: ALLOW")

    assert client.connect.intentions.delete("*", db) is True
    default = wait_until(
        lambda: _authorize(client, db, uri),
        lambda r: r["Reason"] == "Default behavior configured by ACLs",
        timeout=AUTHZ_TIMEOUT,
        what="the ACL default after deleting every intention",
    )
    assert default["Authorized"] is True


@pytest.mark.parametrize(
    "target, uri, message",
    [
        pytest.param(
            "", "spiffe://{td}/ns/default/dc/{dc}/svc/web", "Target service must be specified", id="no-target"
        ),
        pytest.param(
            "db", "http://example.com/svc/web", "ClientCertURI not a valid Connect identifier", id="not-spiffe"
        ),
        pytest.param(
            "db",
            "spiffe://{td}/agent/client/dc/{dc}/id/x",
            "ClientCertURI not a valid Service identifier",
            id="agent-id",
        ),
    ],
)
def test_authorize_rejects_bad_input(client, trust_domain, datacenter, target, uri, message):
    with pytest.raises(consul.exceptions.BadRequest) as err:
        _authorize(client, target, uri.format(td=trust_domain, dc=datacenter))
    assert str(err.value).startswith("400 "), err.value
    assert message in str(err.value), err.value


# --------------------------------------------------------------------------
# invalid service-intentions entries


def _perm(**http: Any) -> list[dict[str, Any]]:
    return [{"Action": "allow", "HTTP": http}]


@pytest.mark.parametrize(
    "destination, sources, fragments",
    [
        pytest.param(
            None,
            [{"Name": "{src}", "Action": "allow", "Permissions": _perm(PathPrefix="/")}],
            ["Sources[0]", "Action", "Permissions"],
            id="action-and-permissions",
        ),
        pytest.param(
            None, [{"Name": "web*", "Action": "allow"}], ["Sources[0].Name", "wildcard"], id="partial-wildcard"
        ),
        pytest.param(
            "*",
            [{"Name": "{src}", "Permissions": _perm(PathPrefix="/")}],
            ["Sources[0]", "Permissions", "wildcard"],
            id="l7-on-wildcard-destination",
        ),
        pytest.param(
            None,
            [{"Name": "{src}", "Permissions": _perm(PathExact="api")}],
            ["Sources[0].Permissions[0].HTTP.PathExact", "start with '/'"],
            id="path-exact-without-slash",
        ),
        pytest.param(
            None,
            [{"Name": "{src}", "Action": "allow"}, {"Name": "{src}", "Action": "deny"}],
            ["Sources[1]", "more than once"],
            id="duplicate-source",
        ),
        pytest.param(
            None, [{"Name": "{src}", "Action": "maybe"}], ["Sources[0].Action", "allow", "deny"], id="bad-action"
        ),
    ],
)
def test_invalid_entry_is_refused_and_changes_nothing(client, config_entry, destination, sources, fragments):
    src = uniq("ixn-src")
    if destination is None:
        destination = uniq("ixn-dst")
        _http_service(config_entry, destination)  # so only the rule under test can fail
        config_entry(KIND, destination, {"Sources": [{"Name": uniq("ixn-prev"), "Action": "deny"}]})
    before = client.config.get(KIND, destination)
    intentions_before = _listed(client, f'DestinationName == "{destination}"')

    bad = [{k: (v.format(src=src) if isinstance(v, str) else v) for k, v in s.items()} for s in sources]
    with pytest.raises(consul.ConsulException) as err:
        # Not through config_entry: its teardown would delete "*" entries it did not write.
        client.config.set(KIND, destination, {"Sources": bad})
    _assert_rejected(err.value, *fragments)

    assert client.config.get(KIND, destination) == before
    assert _listed(client, f'DestinationName == "{destination}"') == intentions_before


def test_l7_permissions_need_an_http_destination(client, intention):
    # Consul checks the service graph on write: L7 Permissions for a destination
    # whose protocol is tcp (the default) are refused ("service ... has protocol
    # "tcp", which is incompatible with L7 intentions permissions").
    src, dst = uniq("ixn-src"), uniq("ixn-tcp")
    with pytest.raises(consul.ConsulException) as err:
        intention(src, dst, permissions=L7_PERMISSIONS)
    _assert_rejected(err.value, "protocol", "tcp")
    assert client.config.get(KIND, dst) is None


def test_path_regex_must_compile_on_write(client, config_entry):
    # Deliberately stricter than Consul, which only compiles PathRegex in the
    # proxy: Trellis compiles every regex when the entry is written, so a bad
    # pattern is a 400 at write time instead of a proxy that cannot load it.
    src, dst = uniq("ixn-src"), uniq("ixn-dst")
    _http_service(config_entry, dst)
    body = {"Sources": [{"Name": src, "Permissions": _perm(PathRegex="/api/([a-z")}]}
    with pytest.raises(consul.ConsulException) as err:
        config_entry(KIND, dst, body)
    assert "does not compile" in str(err.value)
    assert client.config.get(KIND, dst) is None


# --------------------------------------------------------------------------
# headers


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        pytest.param("GET", "/v1/connect/intentions", None, 200, id="list"),
        pytest.param("GET", "/v1/connect/intentions/check?source=a&destination=b", None, 200, id="check"),
        pytest.param("GET", "/v1/connect/intentions/match?by=destination&name=b", None, 200, id="match"),
        pytest.param("PUT", "/v1/agent/connect/authorize", {}, 400, id="authorize-400"),
        pytest.param("GET", "/v1/config/service-intentions/{missing}", None, 404, id="config-404"),
        pytest.param("GET", "/v1/agent/self", None, 200, id="agent-self"),
        pytest.param("GET", "/v1/status/leader", None, 200, id="status-leader"),
    ],
)
def test_default_acl_policy_header(trellis, method, path, body, status):
    resp = raw_request(trellis.base_url, method, path.format(missing=uniq("ixn-missing")), body)
    assert resp.status == status, resp.body
    assert _header(resp.headers, "X-Consul-Default-ACL-Policy") == "allow", resp.headers
