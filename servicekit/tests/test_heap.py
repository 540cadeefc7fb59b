"""The app's garbage-collector settings hold while it serves and are undone when it stops."""

from __future__ import annotations

import gc

from servicekit.heap import GC_YOUNG_THRESHOLD, settled_heap


def test_start_up_objects_are_frozen_while_serving_and_released_after() -> None:
    before = gc.get_threshold()
    kept = [[n] for n in range(100)]  # live at start-up: frozen with the rest
    with settled_heap():
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
