"""Client limits as the operator writes them: defaults, per-client overrides, clear refusals."""

from __future__ import annotations

import pytest

from relay.config import ConfigError, Settings, from_environment
from relay.limits import ClientLimits


def test_defaults_apply_to_every_client_and_overrides_to_theirs() -> None:
    settings = from_environment(
        {
            "RELAY_MAX_PUSHES": "8",
            "RELAY_MAX_PUSHES_PER_CLIENT": "3",
            "RELAY_CLIENT_LIMITS": "2:streams=10,pushes=4; 7:restreams_per_stream=50;2:pushes=5",
        }
    )
    limits = settings.limits()
    assert limits.node_pushes == 8
    assert limits.of(1) == ClientLimits(streams=100, restreams_per_stream=20, pushes=3)
    assert limits.of(2) == ClientLimits(streams=10, restreams_per_stream=20, pushes=5)
    assert limits.of(7).restreams_per_stream == 50


@pytest.mark.parametrize("text", ["2", "x:streams=1", "2:streams", "2:cpus=4", "2:streams=-1", "2:streams=1e3"])
def test_a_malformed_override_is_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match="RELAY_CLIENT_LIMITS"):
        from_environment({"RELAY_CLIENT_LIMITS": text})
    with pytest.raises(ConfigError, match="RELAY_CLIENT_LIMITS"):
        Settings(client_limits=text).limits()
