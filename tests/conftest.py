"""Shared fixtures for pgplug's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgplug.plugin_host import PluginHost, get_host, reset_host


@pytest.fixture
def plugin_host() -> Iterator[PluginHost]:
    """A freshly built process-wide plugin host, forgotten again after the test (so nothing leaks)."""
    reset_host()
    yield get_host()
    reset_host()
