"""Fixtures of this suite (defined in tests/dashboard/media.py, shared with its sibling suite)."""

from tests.dashboard.media import quick_service

__all__ = ["quick_service"]
