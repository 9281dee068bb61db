"""Blocking queries (?index=&wait=), driven through py-consul 1.8.0.

Covers, for both health.service and catalog.service:
- with the current X-Consul-Index and wait='1s', the call blocks for the wait
  and returns the *same* index when nothing changed;
- a change to the watched service (new instance registered ~0.5 s later from
  another thread) ends the wait promptly with a larger index;
- a write to a *different* service does not end the wait early, and the
  index stays the same.
Also: health.service wakes on a check status change of the watched service,
and catalog.services wakes when a new service name appears.

py-consul sends ``?index=<last X-Consul-Index>&wait=<duration>`` and returns
``(index, data)``; its own read timeout is 30 s + wait + wait/16. Consul adds
up to wait/16 of jitter to the server-side wait.
Background writes use a separate client (requests sessions are not shared
across threads).
"""

from __future__ import annotations

import time

import consul
import pytest

from compat_util import Timed, run_later, uniq, wait_until

# A wake-up caused by a write at +0.5 s must arrive well before this.
PROMPT = 3.0
# Allowed overshoot of a timed-out wait beyond wait * (1 + 1/16).
SLACK = 2.0
TTL = "10m"


def _health_service(c: consul.Consul, name: str, **kwargs):
    return c.health.service(name, **kwargs)


def _catalog_service(c: consul.Consul, name: str, **kwargs):
    return c.catalog.service(name, **kwargs)


QUERIES = [
    pytest.param(_health_service, id="health.service"),
    pytest.param(_catalog_service, id="catalog.service"),
]


def _service_ids(data):
    """Instance IDs from either a health.service or a catalog.service answer."""
    return sorted(e["Service"]["ID"] if "Service" in e else e["ServiceID"] for e in data)


def _registered(query, client, name, ids):
    """Wait until ``query`` shows exactly ``ids``; return its index."""
    index, _ = wait_until(
        lambda: query(client, name), lambda r: _service_ids(r[1]) == sorted(ids), what=f"{ids} visible"
    )
    assert int(index) >= 1
    return index


@pytest.mark.parametrize("query", QUERIES)
def test_times_out_with_same_index_when_nothing_changes(client, agent_service, query):
    name = uniq("blk-idle")
    sid = agent_service(name, port=1)
    index = _registered(query, client, name, [sid])

    with Timed() as t:
        new_index, data = query(client, name, index=index, wait="1s")

    assert new_index == index
    assert _service_ids(data) == [sid]
    assert t.elapsed >= 0.9, f"returned after {t.elapsed:.2f}s, before the 1s wait"
    assert t.elapsed <= 1.0 * (1 + 1 / 16) + SLACK, f"took {t.elapsed:.2f}s for a 1s wait"


@pytest.mark.parametrize("query", QUERIES)
def test_wakes_promptly_when_watched_service_changes(client, agent_service, trellis, query):
    name = uniq("blk-wake")
    first = agent_service(name, service_id=f"{name}-1", port=1)
    index = _registered(query, client, name, [first])

    other_client = trellis.new_client()
    writer = run_later(0.5, lambda: agent_service(name, service_id=f"{name}-2", port=2, via=other_client))
    with Timed() as t:
        new_index, data = query(client, name, index=index, wait="10s")
    writer.join()

    assert t.elapsed < PROMPT, f"blocking query returned after {t.elapsed:.2f}s, expected < {PROMPT}s"
    assert t.elapsed >= 0.4, f"returned after {t.elapsed:.2f}s, before anything changed"
    assert int(new_index) > int(index)
    assert f"{name}-2" in _service_ids(data)


@pytest.mark.parametrize("query", QUERIES)
def test_unrelated_write_does_not_wake(client, agent_service, trellis, query):
    watched = uniq("blk-watched")
    unrelated = uniq("blk-unrelated")
    sid = agent_service(watched, port=1)
    index = _registered(query, client, watched, [sid])

    other_client = trellis.new_client()
    landed_at: list[float] = []

    def unrelated_write():
        agent_service(unrelated, port=2, via=other_client)
        wait_until(lambda: other_client.catalog.service(unrelated)[1], bool, what=f"{unrelated} in catalog")
        landed_at.append(time.monotonic())

    wait = 3.0
    writer = run_later(0.5, unrelated_write)
    with Timed() as t:
        new_index, data = query(client, watched, index=index, wait=f"{wait:g}s")
    ended_at = time.monotonic()
    writer.join()

    assert t.elapsed >= wait * 0.95, f"woken after {t.elapsed:.2f}s by a write to another service"
    assert landed_at and landed_at[0] < ended_at, "the unrelated write did not land during the wait"
    assert t.elapsed <= wait * (1 + 1 / 16) + SLACK, f"took {t.elapsed:.2f}s for a {wait}s wait"
    assert new_index == index
    assert _service_ids(data) == [sid]


def test_health_service_wakes_on_check_status_change(client, agent_service, trellis):
    name = uniq("blk-check")
    sid = agent_service(name, port=1, check=consul.Check.ttl(TTL))
    cid = f"service:{sid}"

    def check_status(entries):
        return [c["Status"] for e in entries for c in e["Checks"] if c["CheckID"] == cid]

    index, _ = wait_until(
        lambda: client.health.service(name), lambda r: check_status(r[1]) == ["critical"], what="critical check"
    )

    other_client = trellis.new_client()

    def pass_check():
        assert other_client.agent.check.ttl_pass(cid) is True

    writer = run_later(0.5, pass_check)
    with Timed() as t:
        new_index, data = client.health.service(name, index=index, wait="10s")
    writer.join()

    assert t.elapsed < PROMPT, f"blocking query returned after {t.elapsed:.2f}s, expected < {PROMPT}s"
    assert int(new_index) > int(index)
    assert check_status(data) == ["passing"]


def test_catalog_services_wakes_on_new_service_name(client, agent_service, trellis):
    start_index, _ = client.catalog.services()
    name = uniq("blk-new")

    other_client = trellis.new_client()
    writer = run_later(0.5, lambda: agent_service(name, port=1, via=other_client))
    # catalog.services is woken by *any* service write, so another write in
    # flight may end a wait first: follow the index until the name shows up.
    index, services = start_index, {}
    with Timed() as t:
        while name not in services and t.elapsed_so_far() < PROMPT:
            index, services = client.catalog.services(index=index, wait="10s")
    writer.join()

    assert name in services, f"{name} did not show up in catalog.services"
    assert t.elapsed < PROMPT, f"blocking query returned after {t.elapsed:.2f}s, expected < {PROMPT}s"
    assert int(index) > int(start_index)
