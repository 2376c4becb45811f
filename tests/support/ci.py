"""What a missing prerequisite means: a skip on a developer's machine, a failure in CI."""
from __future__ import annotations

import os

import pytest


def skip_unless_ci(reason: str) -> None:
    """Skip with ``reason`` on a developer's machine; fail in CI, which must provide everything."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)
