"""The cluster's settings: the database URL, the node id and the lease timings, checked at start."""

from __future__ import annotations

import socket

import pytest

from relay.config import ConfigError, Settings, from_environment


def test_defaults_make_one_node_and_a_node_id_from_host_and_port() -> None:
    settings = from_environment({"RELAY_HTTP_PORT": "8081"})
    assert settings.database_url is None
    assert settings.resolved_node_id == f"{socket.gethostname()}:8081"
    any_port = from_environment({"RELAY_HTTP_PORT": "0"})  # two nodes of a test, ports chosen at bind time
    assert any_port.resolved_node_id != any_port.resolved_node_id
    assert (settings.lease_seconds, settings.lease_renew_seconds, settings.lease_margin_seconds) == (10.0, 2.0, 2.0)
    assert from_environment({"RELAY_NODE_ID": "edge-1"}).resolved_node_id == "edge-1"


def test_the_database_url_is_kept_out_of_the_settings_repr() -> None:
    url = "postgresql://relay:s3cret-pw@db/relay"
    settings = from_environment({"RELAY_DATABASE_URL": url})
    assert settings.database_url == url and "s3cret-pw" not in repr(settings)


@pytest.mark.parametrize(
    "env",
    [
        {"RELAY_LEASE_SECONDS": "3", "RELAY_LEASE_RENEW_SECONDS": "2", "RELAY_LEASE_MARGIN_SECONDS": "1"},
        {"RELAY_LEASE_RENEW_SECONDS": "0"},
        {"RELAY_LEASE_MARGIN_SECONDS": "-1"},
        {"RELAY_LEASE_SECONDS": "4"},
    ],
)
def test_lease_timings_must_leave_a_renewal_and_a_margin_inside_the_lease(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="RELAY_LEASE"):
        from_environment(env)


def test_lease_timings_that_fit_are_taken() -> None:
    settings = from_environment({"RELAY_LEASE_SECONDS": "6", "RELAY_LEASE_RENEW_SECONDS": "1"}, Settings())
    assert (settings.lease_seconds, settings.lease_renew_seconds) == (6.0, 1.0)
