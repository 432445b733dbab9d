"""Unit tests of the host-network guard (``tests/support/hostnet.py``) on recorded command outputs, and once on
this host."""

from __future__ import annotations

import json

import pytest

from tests.support.hostnet import HostNet

ADDR = json.dumps([{
    "ifindex": 5, "ifname": "docker0", "operstate": "DOWN", "flags": ["NO-CARRIER", "UP"],
    "addr_info": [
        {"family": "inet", "local": "172.17.0.1", "prefixlen": 16, "scope": "global"},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"},
    ],
}])  # fmt: skip
ROUTE = json.dumps(
    [{"dst": "172.17.0.0/16", "protocol": "kernel", "prefsrc": "172.17.0.1", "flags": ["linkdown"]}]
)
FILTER = """*filter
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -o br-1234 -j DOCKER
COMMIT
"""
NAT = "*nat\n:DOCKER - [0:0]\n-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT\n"


def _host(addr: str = ADDR, route: str = ROUTE, filter_: str = FILTER, nat: str = NAT) -> HostNet:
    return HostNet.parse(addr, route, {"filter": filter_, "nat": nat})


def test_what_the_system_engine_changes_by_itself_is_not_a_difference() -> None:
    up = ADDR.replace('"DOWN"', '"UP"').replace('"fe80::1"', '"fe80::2"')
    other_bridge = FILTER.replace("br-1234", "br-9999")
    assert _host().differences(_host(addr=up, route=ROUTE.replace(', "flags": ["linkdown"]', ""),
                                     filter_=other_bridge)) == []  # fmt: skip


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        (_host(addr=ADDR.replace('"ifindex": 5', '"ifindex": 9')), "ifindex 5 -> 9"),
        (_host(addr="[]", route="[]"), "ifindex 5 -> None"),
        (_host(addr=ADDR.replace("172.17.0.1", "10.99.0.1")), "addresses"),
        (_host(route="[]"), "routes"),
        (_host(filter_=FILTER.replace(":DOCKER-USER - [0:0]\n", "")), "chains"),
        (_host(nat="*nat\n:DOCKER - [0:0]\nCOMMIT\n"), "bridge_rules"),
    ],
)
def test_a_deleted_readdressed_or_unruled_docker0_is_named(changed: HostNet, named: str) -> None:
    differences = _host().differences(changed)
    assert differences
    assert named in " ".join(differences)


def test_this_host_is_unchanged_between_two_records() -> None:
    HostNet.record().check("between two records")
