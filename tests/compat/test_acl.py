"""ACLs through py-consul's ``acl`` API against an agent with ``default_policy = "deny"``.

Covers what py-consul's own ACL tests exercise (token list/read/create/clone/update/delete,
policy list/read, templated policies, permission denials with and without a token), and the
enforcement a Consul user relies on: filtered catalog reads, registration and leaf checks,
intention writes, bootstrap once.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import consul
import pytest

ANONYMOUS = "00000000-0000-0000-0000-000000000002"
GLOBAL_MANAGEMENT = "00000000-0000-0000-0000-000000000001"


def contains(haystack: Any, needle: Any) -> bool:
    """Whether ``needle`` appears in ``haystack``: a dict whose items are all in some dict of
    it, or each element of a list of such."""
    if isinstance(needle, list):
        return all(contains(haystack, n) for n in needle)
    if isinstance(haystack, list):
        return any(contains(h, needle) for h in haystack)
    if isinstance(haystack, dict) and isinstance(needle, dict):
        return all(k in haystack and haystack[k] == v for k, v in needle.items())
    return haystack == needle


def request(base_url: str, method: str, path: str, token: str | None = None, body: Any = None):
    """(status, headers, text) of a plain request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base_url + path, data=data, method=method)
    if token:
        req.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


class TestTokens:
    def test_without_permission_every_token_call_is_denied(self, acl_agent) -> None:
        c = acl_agent.client
        for token in (None, "anonymous"):
            with pytest.raises(consul.ACLPermissionDenied):
                c.acl.token.list(token=token)
            with pytest.raises(consul.ACLPermissionDenied):
                c.acl.token.create(token=token)
            for call in (c.acl.token.update, c.acl.token.clone, c.acl.token.read, c.acl.token.delete):
                with pytest.raises(consul.ACLPermissionDenied):
                    call(accessor_id=ANONYMOUS, token=token)

    def test_the_list_holds_the_management_and_anonymous_tokens(self, acl_agent) -> None:
        tokens = acl_agent.client.acl.token.list(token=acl_agent.management)
        assert len(tokens) == 2
        assert contains(
            tokens,
            {
                "Description": "Initial Management Token",
                "Policies": [{"ID": GLOBAL_MANAGEMENT, "Name": "global-management"}],
                "SecretID": acl_agent.management,
            },
        )
        assert contains(tokens, {"AccessorID": ANONYMOUS, "SecretID": "anonymous"})

    def test_read(self, acl_agent) -> None:
        c, m = acl_agent.client, acl_agent.management
        with pytest.raises(consul.ConsulException):
            c.acl.token.read(accessor_id="unknown", token=m)
        assert contains(c.acl.token.read(accessor_id=ANONYMOUS, token=m), {"SecretID": "anonymous"})
        assert c.acl.token.read_self(token=m)["SecretID"] == m

    def test_create_with_and_without_ids(self, acl_agent) -> None:
        c, m = acl_agent.client, acl_agent.management
        c.acl.token.create(accessor_id="00000000-DEAD-BEEF-0000-000000000000", token=m)
        c.acl.token.create(secret_id="DEADBEEF-0000-0000-0000-000000000000", token=m)
        c.acl.token.create(
            secret_id="00000000-A5A5-0000-0000-000000000000",
            accessor_id="00000000-0000-A5A5-0000-000000000000",
            description="some token!",
            token=m,
        )
        tokens = c.acl.token.list(token=m)
        assert len(tokens) == 5
        assert contains(
            tokens,
            [
                {"AccessorID": "00000000-DEAD-BEEF-0000-000000000000", "Description": ""},
                {"SecretID": "DEADBEEF-0000-0000-0000-000000000000"},
                {
                    "AccessorID": "00000000-0000-A5A5-0000-000000000000",
                    "SecretID": "00000000-A5A5-0000-0000-000000000000",
                    "Description": "some token!",
                },
            ],
        )
        # The same accessor twice is refused and changes nothing.
        with pytest.raises(consul.ConsulException):
            c.acl.token.create(accessor_id="00000000-DEAD-BEEF-0000-000000000000", token=m)
        assert len(c.acl.token.list(token=m)) == 5

    def test_clone_update_delete(self, acl_agent) -> None:
        c, m = acl_agent.client, acl_agent.management
        with pytest.raises(consul.ConsulException):
            c.acl.token.clone(accessor_id="unknown", token=m)
        with pytest.raises(consul.ConsulException):
            c.acl.token.update(accessor_id="unknown", token=m)
        original = "00000000-DEAD-BEEF-0000-000000000000"
        c.acl.token.create(accessor_id=original, description="original", token=m)
        cloned = c.acl.token.clone(accessor_id=original, description="cloned", token=m)
        assert cloned["AccessorID"] != original and cloned["Description"] == "cloned"
        assert len(c.acl.token.list(token=m)) == 4
        c.acl.token.update(accessor_id=original, description="updated", token=m)
        assert c.acl.token.read(accessor_id=original, token=m)["Description"] == "updated"
        assert len(c.acl.token.list(token=m)) == 4
        assert c.acl.token.delete(accessor_id=original, token=m) is True
        assert len(c.acl.token.list(token=m)) == 3
        with pytest.raises(consul.ConsulException):
            c.acl.token.read(accessor_id=original, token=m)

    def test_a_reader_sees_secrets_hidden(self, acl_agent) -> None:
        c, m = acl_agent.client, acl_agent.management
        c.acl.policy.create(name="acl-read", rules={"acl": "read"}, token=m)
        reader = c.acl.token.create(policies_name=["acl-read"], token=m)["SecretID"]
        tokens = c.acl.token.list(token=reader)
        assert {t["SecretID"] for t in tokens} == {"<hidden>"}
        with pytest.raises(consul.ACLPermissionDenied):
            c.acl.token.create(token=reader)


class TestPolicies:
    def test_list_and_read_the_builtin(self, acl_agent) -> None:
        c, m = acl_agent.client, acl_agent.management
        assert contains(c.acl.policy.list(token=m), {"ID": GLOBAL_MANAGEMENT, "Name": "global-management"})
        with pytest.raises(consul.ConsulException):
            c.acl.policy.read(uuid="unknown", token=m)
        policy = c.acl.policy.read(uuid=GLOBAL_MANAGEMENT, token=m)
        assert policy["Name"] == "global-management" and 'acl = "write"' in policy["Rules"]

    def test_create_update_delete_and_bad_rules(self, acl_agent) -> None:
        c, m = acl_agent.client, acl_agent.management
        created = c.acl.policy.create(name="web-read", rules={"service": {"web": {"policy": "read"}}}, token=m)
        status, _, body = request(acl_agent.base_url, "GET", "/v1/acl/policy/name/web-read", token=m)
        assert status == 200 and json.loads(body)["ID"] == created["ID"]
        c.acl.policy.update(
            uuid=created["ID"], name="web-read", rules={"service": {"web": {"policy": "write"}}}, token=m
        )
        assert "write" in c.acl.policy.read(uuid=created["ID"], token=m)["Rules"]
        with pytest.raises(consul.ConsulException):
            c.acl.policy.create(name="bad", rules={"service": {"web": {"policy": "sometimes"}}}, token=m)
        with pytest.raises(consul.ConsulException):
            c.acl.policy.create(name="web-read", rules={"acl": "read"}, token=m)
        # The built-in's rules cannot change, nor can it go.
        with pytest.raises(consul.ConsulException):
            c.acl.policy.update(uuid=GLOBAL_MANAGEMENT, name="global-management", rules={"acl": "read"}, token=m)
        with pytest.raises(consul.ConsulException):
            c.acl.policy.delete(uuid=GLOBAL_MANAGEMENT, token=m)
        assert c.acl.policy.delete(uuid=created["ID"], token=m) is True
        assert not contains(c.acl.policy.list(token=m), {"Name": "web-read"})


class TestTemplatedPolicies:
    def test_preview_read_list(self, acl_agent) -> None:
        c, m = acl_agent.client, acl_agent.management
        preview = c.acl.templated_policy.preview(
            name="builtin/service", template_variables={"Name": "my-service"}, token=m
        )
        assert preview["ID"] and preview["Name"].startswith("synthetic-policy-")
        assert 'service "my-service"' in preview["Rules"]
        read = c.acl.templated_policy.read(name="builtin/service", token=m)
        assert read["TemplateName"] == "builtin/service" and "Template" in read
        listed = c.acl.templated_policy.list(token=m)
        assert listed["builtin/service"]["TemplateName"] == "builtin/service"


class TestEnforcement:
    def test_bootstrap_is_refused_once_done(self, acl_agent) -> None:
        status, _, text = request(acl_agent.base_url, "PUT", "/v1/acl/bootstrap")
        assert status == 403
        assert text.startswith("Permission denied: ACL bootstrap no longer allowed (reset index: ")

    def test_a_service_identity_registers_its_service_and_gets_its_leaf_only(self, acl_agent) -> None:
        c, m, url = acl_agent.client, acl_agent.management, acl_agent.base_url
        web = c.acl.token.create(service_identities=[{"ServiceName": "web"}], token=m)["SecretID"]
        # Nothing without a token.
        with pytest.raises(consul.ACLPermissionDenied):
            c.agent.service.register("web", port=80)
        assert request(url, "GET", "/v1/agent/connect/ca/leaf/web")[0] == 403
        # The identity's service and its sidecar, not another.
        c.agent.service.register("web", port=80, token=web)
        status, _, _ = request(
            url,
            "PUT",
            "/v1/agent/service/register",
            token=web,
            body={"Name": "web2", "Port": 81},
        )
        assert status == 403
        assert request(url, "GET", "/v1/agent/connect/ca/leaf/web", token=web)[0] == 200
        status, _, text = request(url, "GET", "/v1/agent/connect/ca/leaf/db", token=web)
        assert status == 403 and "lacks permission 'service:write' on \"db\"" in text

    def test_catalog_reads_are_filtered_and_say_so_only_to_a_token(self, acl_agent) -> None:
        c, m, url = acl_agent.client, acl_agent.management, acl_agent.base_url
        c.agent.service.register("web", port=80, token=m)
        c.agent.service.register("db", port=81, token=m)
        web = c.acl.token.create(
            service_identities=[{"ServiceName": "web"}], token=m
        )["SecretID"]
        c.acl.policy.create(name="only-web", rules={"service": {"web": {"policy": "read"}}}, token=m)
        only_web = c.acl.token.create(policies_name=["only-web"], token=m)["SecretID"]
        status, headers, body = request(url, "GET", "/v1/catalog/services", token=only_web)
        assert status == 200 and set(json.loads(body)) == {"web"}
        assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
        assert headers.get("X-Consul-Default-ACL-Policy") == "deny"
        # The service identity reads every service.
        _, headers, body = request(url, "GET", "/v1/catalog/services", token=web)
        assert {"web", "db"} <= set(json.loads(body))
        # Anonymous: nothing, and no header telling it so.
        status, headers, body = request(url, "GET", "/v1/catalog/services")
        assert status == 200 and json.loads(body) == {}
        assert headers.get("X-Consul-Results-Filtered-By-ACLs") is None
        # An unknown token is refused.
        assert request(url, "GET", "/v1/catalog/services", token="nope")[0] == 403

    def test_intention_writes_need_intentions_write_on_the_destination(self, acl_agent) -> None:
        c, m, url = acl_agent.client, acl_agent.management, acl_agent.base_url
        c.acl.policy.create(
            name="db-intentions", rules={"service": {"db": {"policy": "read", "intentions": "write"}}}, token=m
        )
        writer = c.acl.token.create(policies_name=["db-intentions"], token=m)["SecretID"]
        ok = request(
            url, "PUT", "/v1/connect/intentions/exact?source=web&destination=db", token=writer, body={"Action": "allow"}
        )
        assert ok[0] == 200
        denied = request(
            url, "PUT", "/v1/connect/intentions/exact?source=web&destination=api", token=writer, body={"Action": "allow"}
        )
        assert denied[0] == 403 and "intentions:write" in denied[2]
        # Without intentions on `api`, the default (deny) decides authorization.
        c.agent.service.register("api", port=82, token=m)
        status, _, body = request(
            url,
            "POST",
            "/v1/agent/connect/authorize",
            token=m,
            body={"Target": "api", "ClientCertURI": "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web"},
        )
        assert status == 200
        assert json.loads(body) == {"Authorized": False, "Reason": "Default behavior configured by ACLs"}

    def test_a_deleted_token_stops_working(self, acl_agent) -> None:
        c, m, url = acl_agent.client, acl_agent.management, acl_agent.base_url
        token = c.acl.token.create(service_identities=[{"ServiceName": "web"}], token=m)
        assert request(url, "GET", "/v1/agent/connect/ca/leaf/web", token=token["SecretID"])[0] == 200
        c.acl.token.delete(accessor_id=token["AccessorID"], token=m)
        # This agent made the change: its resolutions are dropped at once.
        status, _, text = request(url, "GET", "/v1/agent/connect/ca/leaf/web", token=token["SecretID"])
        assert status == 403 and text.strip() == "ACL not found"


class TestRoles:
    def test_role_crud_and_a_token_acting_through_its_role(self, acl_agent) -> None:
        c, m, url = acl_agent.client, acl_agent.management, acl_agent.base_url
        c.acl.policy.create(name="db-read", rules={"service": {"db": {"policy": "read"}}}, token=m)
        role = c.acl.role.create(
            name="web-role",
            description="web and db",
            policies_name=["db-read"],
            service_identities=[{"ServiceName": "web"}],
            token=m,
        )
        assert role["Name"] == "web-role" and role["Policies"][0]["Name"] == "db-read"
        assert c.acl.role.read(role_id=role["ID"], token=m)["Description"] == "web and db"
        assert c.acl.role.read_by_name(name="web-role", token=m)["ID"] == role["ID"]
        assert contains(c.acl.role.list(token=m), {"ID": role["ID"]})
        # A second role of the same name is refused.
        with pytest.raises(consul.ConsulException):
            c.acl.role.create(name="web-role", token=m)
        token = c.acl.token.create(roles_name=["web-role"], token=m)
        assert token["Roles"] == [{"ID": role["ID"], "Name": "web-role"}]
        secret = token["SecretID"]
        assert request(url, "GET", "/v1/agent/connect/ca/leaf/web", token=secret)[0] == 200
        assert request(url, "GET", "/v1/agent/connect/ca/leaf/db", token=secret)[0] == 403
        # The role changes: the token follows (this agent's resolutions are dropped on a write).
        c.acl.role.update(
            role_id=role["ID"], name="web-role", service_identities=[{"ServiceName": "db"}], token=m
        )
        assert request(url, "GET", "/v1/agent/connect/ca/leaf/db", token=secret)[0] == 200
        assert request(url, "GET", "/v1/agent/connect/ca/leaf/web", token=secret)[0] == 403
        assert c.acl.role.delete(role_id=role["ID"], token=m) is True
        assert request(url, "GET", "/v1/agent/connect/ca/leaf/db", token=secret)[0] == 403

    def test_a_token_with_a_templated_policy(self, acl_agent) -> None:
        c, m, url = acl_agent.client, acl_agent.management, acl_agent.base_url
        token = c.acl.token.create(templated_policies=[{"builtin/service": {"Name": "api"}}], token=m)
        assert token["TemplatedPolicies"][0]["TemplateName"] == "builtin/service"
        secret = token["SecretID"]
        assert request(url, "GET", "/v1/agent/connect/ca/leaf/api", token=secret)[0] == 200
        assert request(url, "GET", "/v1/agent/connect/ca/leaf/web", token=secret)[0] == 403
        with pytest.raises(consul.ConsulException):
            c.acl.token.create(templated_policies=[{"builtin/nope": {"Name": "api"}}], token=m)
