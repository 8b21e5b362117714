"""Tokens for the launches the broker tests stage themselves (paused: the controller leaves
them to the test, its broker serves them)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def token_key() -> bytes:
    return os.urandom(32)
