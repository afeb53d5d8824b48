"""collector/heap.py: what is frozen leaves the collections' walk, and still dies when dropped."""

from __future__ import annotations

import gc
import weakref

import pytest

from courierwatch.collector import heap
from courierwatch.v1 import courierwatch_pb2 as pb


class Held:
    """Stands for the state's objects: tracked by the cyclic collector, in no cycle."""

    def __init__(self) -> None:
        self.result = pb.Result(target="courier.push.apple.com")
        self.keys = [("courier.push.apple.com", 5223)]


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()  # the rest of the suite collects as usual


def test_frozen_objects_leave_full_collections_and_die_by_reference_count(unfrozen):
    held = [Held() for _ in range(1000)]
    assert gc.is_tracked(held[0])
    heap.freeze()
    assert gc.get_freeze_count() >= 1000
    assert not any(o is held[0] for o in gc.get_objects(2))  # not walked any more
    gone = weakref.ref(held[0])
    del held[0]
    assert gone() is None  # freed at once: no collection needed


def test_young_cycles_are_collected_before_freezing(unfrozen):
    cycle = Held()
    cycle.keys.append(cycle)  # garbage only a collection can free
    gone = weakref.ref(cycle)
    del cycle
    heap.freeze()
    assert gone() is None
