"""Fixtures for the black-box ringrelay suite.

* `driver`: every test that uses a server runs once per driver (io_uring, epoll).
* `server`: one long-lived server per driver (default config, 2 workers).
* `make_server`: starts extra servers (own timers/limits) for one test.
* `healthy_pair`: two paired clients on `server`, used to show one bad connection does not hurt others.

Every server started here is stopped with SIGTERM at teardown and must exit 0 within 15 s.
On a failing test, the stderr of every running server is attached to the report.
"""

from __future__ import annotations

import pytest

import helpers
from helpers import Server, pair, round_trip, stop_server

DRIVERS = ["io_uring", "epoll"]


@pytest.fixture(scope="session", params=DRIVERS)
def driver(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def server(driver):
    srv = Server(driver=driver, workers=2).start()
    yield srv
    stop_server(srv)


@pytest.fixture
def make_server(driver):
    started: list[Server] = []

    def factory(env: dict | None = None, workers: int = 2, extra_args: list[str] | None = None) -> Server:
        srv = Server(driver=driver, workers=workers, env=env, extra_args=extra_args).start()
        started.append(srv)
        return srv

    yield factory
    errors = []
    for srv in started:
        try:
            stop_server(srv)
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def healthy_pair(server):
    """A paired session on `server` that must keep working while another connection misbehaves."""
    _, a, b = pair(server)
    round_trip(a, b, "before")
    yield a, b
    for c in (a, b):
        try:
            c.close()
        except Exception:
            pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call"):
        for srv in list(helpers.ACTIVE_SERVERS):
            log = srv.log().splitlines()
            rep.sections.append((f"ringrelay stderr ({srv.driver}, {srv.listen})", "\n".join(log[-150:])))
