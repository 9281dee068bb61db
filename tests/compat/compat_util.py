"""Small helpers shared by the compatibility tests (stdlib only).

- ``uniq``: unique, DNS-safe names so every test works on its own services.
- ``wait_until``: poll a callable until a predicate holds (anti-entropy from
  the agent's local state to the catalog is asynchronous in Consul).
- ``raw_request``: a plain urllib request, for the few places where the
  status code or headers matter and py-consul hides them.
- ``Timed``: a context manager measuring wall-clock time of a call.
- ``run_later``: run a callable in a background thread after a delay.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

# How long a catalog/health read may lag behind an agent write.
SYNC_TIMEOUT = 5.0


def uniq(prefix: str) -> str:
    """Return ``<prefix>-<8 hex chars>``, unique for this test session."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(
    fetch: Callable[[], Any],
    predicate: Callable[[Any], bool],
    timeout: float = SYNC_TIMEOUT,
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    """Call ``fetch()`` until ``predicate(result)`` is true; return that result.

    Raises AssertionError (showing the last value seen) after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if predicate(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(base_url: str, method: str, path: str, body: Any = None, timeout: float = 30.0) -> RawResponse:
    """Send one HTTP request with urllib and return status, headers and body
    (4xx/5xx responses are returned, not raised)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return RawResponse(resp.status, dict(resp.headers.items()), resp.read().decode())
    except urllib.error.HTTPError as err:
        return RawResponse(err.code, dict(err.headers.items()), err.read().decode())


@dataclass
class Timed:
    """``with Timed() as t: ...`` then ``t.elapsed`` holds the seconds taken."""

    elapsed: float = 0.0
    _start: float = field(default=0.0, repr=False)

    def __enter__(self) -> "Timed":
        self._start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self._start

    def elapsed_so_far(self) -> float:
        return time.monotonic() - self._start


class run_later:  # noqa: N801 - used like a function
    """Run ``fn`` in a daemon thread after ``delay`` seconds.

    ``join()`` waits for it and re-raises any exception it raised, so a failed
    background write fails the test instead of passing silently.
    """

    def __init__(self, delay: float, fn: Callable[[], Any]) -> None:
        self._error: BaseException | None = None

        def body() -> None:
            time.sleep(delay)
            try:
                fn()
            except BaseException as err:  # noqa: BLE001 - re-raised in join()
                self._error = err

        self._thread = threading.Thread(target=body, daemon=True)
        self._thread.start()

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "background write did not finish"
        if self._error is not None:
            raise self._error
