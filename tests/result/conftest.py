"""Fixtures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.vectors import VECTORS_DIR


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS_DIR / "vectors.json").read_text())
    return data
