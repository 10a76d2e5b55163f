"""Markers for the security test suite."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: bounded mixed-load soak test (fixed operation count, ~10 s); deselect with -m 'not soak'"
    )
