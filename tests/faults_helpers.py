"""Helpers for the fault suite. Its ``start`` fixture (a server factory) lives in
conftest.py with ``serve``, of which it is an alias."""

from __future__ import annotations

from typing import Callable

import pytest

from bench.faults import NotApplicable


def run_or_skip(fn: Callable, *args, **kw):
    """Run a scenario; a :class:`NotApplicable` becomes a skip with its reason."""
    try:
        return fn(*args, **kw)
    except NotApplicable as exc:
        pytest.skip(str(exc))
