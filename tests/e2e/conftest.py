"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import Up


@pytest.fixture
def stacks() -> Iterator[list[Up]]:
    """`eventpipe up` processes a test started: killed afterwards, whatever happened."""
    started: list[Up] = []
    yield started
    for up in started:
        up.kill()
