"""Plain HTTP routes: /health, 404, security headers, admin listener."""

import time

import pytest

from helpers import (assert_json_error, assert_security_headers, http_get, pair, round_trip, unique)


def check_health_body(body: dict, driver: str, workers: int):
    assert body["status"] == "ok"
    assert body["service"] == "ringrelay"
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["uptime_s"], (int, float)) and body["uptime_s"] >= 0
    assert body["driver"] == driver
    assert body["workers"] == workers
    assert isinstance(body["active_sessions"], int) and body["active_sessions"] >= 0
    assert isinstance(body["active_connections"], int) and body["active_connections"] >= 0


def test_health(server, driver):
    r = http_get(server.listen, "/health")
    assert r.status == 200
    assert "application/json" in r.headers.get("content-type", "")
    assert_security_headers(r)
    check_health_body(r.json(), driver, 2)


def test_health_on_admin_listener(server, driver):
    r = http_get(server.admin, "/health")
    assert r.status == 200
    assert_security_headers(r)
    check_health_body(r.json(), driver, 2)


@pytest.mark.parametrize("path", ["/nope", "/", "/v1", "/v1/relay", "/healthz", "/v1/echo/x", "/stats", "/metrics"])
def test_unknown_route_is_404_json(server, path):
    r = http_get(server.listen, path)
    body = assert_json_error(r, 404)
    assert body["code"]


def test_unknown_route_on_admin_is_404_json(server):
    assert_json_error(http_get(server.admin, "/nope"), 404)


def test_health_counts_sessions_and_connections(make_server, driver):
    srv = make_server(workers=3)
    body = http_get(srv.listen, "/health").json()
    assert body["workers"] == 3
    assert body["active_sessions"] == 0
    assert body["active_connections"] == 0
    _, a, b = pair(srv)
    try:
        round_trip(a, b)
        deadline = time.monotonic() + 3
        while True:
            body = http_get(srv.listen, "/health").json()
            if (body["active_sessions"], body["active_connections"]) == (1, 2) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (body["active_sessions"], body["active_connections"]) == (1, 2), body
    finally:
        a.close()
        b.close()


def test_uptime_grows(make_server):
    srv = make_server()
    u0 = http_get(srv.listen, "/health").json()["uptime_s"]
    time.sleep(1.2)
    u1 = http_get(srv.listen, "/health").json()["uptime_s"]
    assert u1 >= u0 + 1, (u0, u1)


def test_ws_routes_without_upgrade_are_refused_with_json(server):
    """A plain GET to a WebSocket route is not an upgrade: 400 with a JSON body (never 200)."""
    for path in [f"/v1/relay/{unique()}", f"/desktop/{unique()}", f"/mobile/{unique()}", "/v1/echo"]:
        r = http_get(server.listen, path)
        assert 400 <= r.status < 500, (path, r.status)
        assert_json_error(r, r.status)
