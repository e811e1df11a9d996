from __future__ import annotations

import gc

import pytest

from worker.training.speedups.collector import long_lived_objects_frozen


def test_objects_alive_at_the_start_are_frozen_for_the_block_and_released_after() -> None:
    assert gc.get_freeze_count() == 0
    with long_lived_objects_frozen():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_a_block_inside_another_leaves_the_freeze_to_the_outer_one() -> None:
    with long_lived_objects_frozen():
        frozen = gc.get_freeze_count()
        made_since = [[index] for index in range(1000)]  # a second freeze would take these 1,000 lists in
        with long_lived_objects_frozen():
            pass
        # Frozen objects that other threads let go of leave the count; nothing joins it.
        assert frozen - 100 < gc.get_freeze_count() <= frozen
        assert len(made_since) == 1000
    assert gc.get_freeze_count() == 0


def test_the_freeze_ends_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), long_lived_objects_frozen():
        raise RuntimeError("training failed")
    assert gc.get_freeze_count() == 0


def test_garbage_made_inside_the_block_is_still_collected() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    collected: list[int] = []
    with long_lived_objects_frozen():
        cycle = Cycle()
        gc.callbacks.append(lambda phase, info: collected.append(info["collected"]) if phase == "stop" else None)
        try:
            del cycle
            gc.collect()
        finally:
            gc.callbacks.pop()
    assert sum(collected) >= 1
