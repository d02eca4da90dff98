"""The harness itself: a namespace gets only its own /30, its link can be rate-limited and cut, and it is
removed whatever happens in the test."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.netns import namespace

pytestmark = [pytest.mark.integration, pytest.mark.network]


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def _links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout


def test_a_namespace_has_one_private_link_and_is_removed_even_on_failure() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), namespace("h") as ns:
        assert ns.name in _namespaces() and ns.host_if in _links()
        assert ns.address.startswith("10.200.") and ns.host_address.startswith("10.200.")
        routes = subprocess.run(
            ns.argv(["ip", "-4", "route", "show"]), capture_output=True, text=True, check=True
        ).stdout
        assert routes.split()[0] == ns.address.rsplit(".", 1)[0] + ".0/30", routes
        assert "default" not in routes, "the namespace must reach nothing but its own link"
        ns.rate_limit(500)
        assert "tbf" in ns.qdisc() and "500Kbit" in ns.qdisc()
        ns.link_down()
        down = subprocess.run(ns.argv(["ip", "-o", "link", "show", ns.ns_if]), capture_output=True, text=True)
        assert "state DOWN" in down.stdout
        ns.link_up()
        raise Boom
    assert ns.name not in _namespaces()
    assert ns.host_if not in _links()
