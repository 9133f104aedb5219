"""The outbound address policy: public unicast only, checked on the resolved address.

Resolution is injected, and the only sockets opened go to loopback receivers:
no test here reaches a private range, the metadata address or the internet.
"""

from __future__ import annotations

import ipaddress
import json

import pytest
import redis

from shared.clock import ManualClock
from shared.errors import DestinationRefused
from shared.events import EventLog
from shared.outbound import OutboundPolicy, is_public
from shared.state import SessionStore
from shared.webhooks import WebhookConfigs, WebhookDeliverer
from tests.support.receiver import LOCAL_RECEIVERS, Receiver

REFUSED_HOSTS = [
    "127.0.0.1", "127.8.9.10", "0.0.0.0", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "169.254.169.254", "100.64.0.1", "224.0.0.1", "255.255.255.255", "198.18.0.1",
    "[::1]", "[::]", "[fc00::1]", "[fd12:3456::1]", "[fe80::1]", "[ff02::1]",
    "[::ffff:127.0.0.1]", "[::ffff:8.8.8.8]", "[::ffff:a9fe:a9fe]", "[::127.0.0.1]",
    "[2002:7f00:1::1]", "[2002:a9fe:a9fe::1]", "[64:ff9b::a9fe:a9fe]", "[2001::1]", "127.0.0.1.",
]
NUMERIC_SPELLINGS = ["2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1",
                     "017700000001", "2852039166", "0251.0376.0251.0376"]


def resolving(table: dict[str, list[str]]) -> OutboundPolicy:
    """A strict policy whose resolver answers from ``table`` (no DNS is asked)."""
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return OutboundPolicy(resolve=resolve)


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_non_public_literals_are_refused(host: str) -> None:
    with pytest.raises(DestinationRefused):
        OutboundPolicy().check_url(f"http://{host}:8080/hook")


@pytest.mark.parametrize("host", NUMERIC_SPELLINGS)
def test_numeric_hosts_in_other_spellings_are_refused_even_when_private_is_allowed(
        host: str) -> None:
    for policy in (OutboundPolicy(), LOCAL_RECEIVERS):
        with pytest.raises(DestinationRefused, match="dotted decimal"):
            policy.check_url(f"http://{host}/hook")


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111",
                                     "2a00:1450:4001:82a::200e"])
def test_public_unicast_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))
    host = f"[{address}]" if ":" in address else address
    OutboundPolicy().check_url(f"https://{host}/hook")


def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    policy = resolving({"hooks.example.com": ["93.184.215.14"],
                        "internal.example.com": ["10.0.0.7"],
                        "mixed.example.com": ["93.184.215.14", "169.254.169.254"],
                        "v6.example.com": ["::1"]})
    policy.check_url("https://hooks.example.com/hook")
    for name in ("internal", "mixed", "v6"):
        with pytest.raises(DestinationRefused):
            policy.check_url(f"https://{name}.example.com/hook")
    # Unknown now: it may resolve later, and is checked again when a delivery connects.
    policy.check_url("https://not-yet.example.com/hook")
    assert policy.addresses("hooks.example.com", 443) == ["93.184.215.14"]
    with pytest.raises(DestinationRefused):
        policy.addresses("mixed.example.com", 443)


def test_localhost_is_refused_by_the_system_resolver_too() -> None:
    with pytest.raises(DestinationRefused):
        OutboundPolicy().check_url("http://localhost:9/hook")
    LOCAL_RECEIVERS.check_url("http://localhost:9/hook")


def test_the_connection_goes_to_the_checked_address_not_a_second_lookup() -> None:
    """A name the system resolver does not know reaches the receiver: the socket was
    opened to the address the policy checked, and the Host header keeps the name."""
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])  # a rebinding resolver: one answer per ask
    policy = OutboundPolicy(allow_private=True, resolve=lambda host, port: next(answers))
    with Receiver([204]) as receiver:
        port = receiver.server.server_address[1]
        response = policy.session().post(f"http://rebind.invalid:{port}/hook", data=b"{}",
                                          timeout=5)
    assert response.status_code == 204
    assert receiver.requests[0]["headers"]["Host"] == f"rebind.invalid:{port}"


def test_a_resolved_private_address_is_never_connected_to() -> None:
    with Receiver([204]) as receiver:
        port = receiver.server.server_address[1]
        policy = resolving({"rebind.example.com": ["127.0.0.1"], "localhost": ["127.0.0.1"]})
        for url in (receiver.url, f"http://rebind.example.com:{port}/hook"):
            with pytest.raises(DestinationRefused):
                policy.session().post(url, data=b"{}", timeout=5)
    assert receiver.requests == []


def _delivery(client: redis.Redis, tenant: str, url: str,
              policy: OutboundPolicy) -> tuple[str, dict[str, object]]:
    configs = WebhookConfigs(client, outbound=LOCAL_RECEIVERS)
    configs.set(tenant, url)  # stored as a dev set-up would; delivered by a strict worker
    SessionStore(client).begin_pairing(tenant, "qr", 60)
    event_id = EventLog(client).history(tenant, 1)[0].id
    hooks = WebhookDeliverer(client, max_attempts=5, backoff_s=2.0, timeout_s=2.0,
                             clock=ManualClock(), outbound=policy)
    outcome = hooks.attempt(tenant, event_id, 1)
    delivery = configs.get(tenant)["delivery"]  # type: ignore[index]
    return outcome.status, delivery


def test_a_delivery_to_a_refused_address_fails_at_once_with_a_clear_error(
        redis_client: redis.Redis, tenant_id: str) -> None:
    with Receiver([204]) as receiver:
        status, delivery = _delivery(redis_client, tenant_id, receiver.url, OutboundPolicy())
    assert receiver.requests == []
    assert status == "gave_up" and delivery["last_status"] == "failed"
    assert "not public" in str(delivery["last_error"])
    assert "127.0.0.1" not in json.dumps(delivery)


def test_redirects_are_not_followed(redis_client: redis.Redis, tenant_id: str) -> None:
    with Receiver([204]) as target, Receiver([302]) as first:
        first.location = target.url
        status, delivery = _delivery(redis_client, tenant_id, first.url, LOCAL_RECEIVERS)
    assert len(first.requests) == 1 and target.requests == []
    assert status == "retry" and delivery["last_error"] == "HTTP 302"
