"""shared.heap: what exists when a worker is up is frozen out of the collector's full passes, and garbage is not."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from shared import heap


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process goes on with an ordinary collector


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_live_objects_are_frozen_and_cyclic_garbage_is_collected_first(thawed: None) -> None:
    kept = [Node() for _ in range(100)]
    dropped = Node()
    gone = weakref.ref(dropped)
    del dropped
    assert gone() is not None  # the cycle keeps it until a collection
    frozen = heap.freeze_startup()
    assert gone() is None  # collected before the freeze, not frozen for ever
    assert frozen == gc.get_freeze_count() and frozen >= len(kept)
    assert all(gc.is_tracked(node) for node in kept)
    gc.collect()  # a full pass leaves the frozen objects frozen (it walks only what was made since)
    assert gc.get_freeze_count() == frozen
