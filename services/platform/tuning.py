"""Process tuning shared by the long-running workers (the core consumer and the projector)."""

from __future__ import annotations

import gc


def relax_garbage_collector() -> None:
    """Fewer cyclic garbage collections for a long-running worker.

    The core keeps tens of thousands of aggregates cached and allocates a few dozen objects per
    interaction; with the default thresholds the older generations, which hold that whole cache,
    are walked every few hundred interactions: about a third of the core's CPU. Our objects rarely
    form cycles, so collecting less often frees the same memory. The youngest generation stays
    small enough that a collection pauses for milliseconds, not tens of them.
    """
    gc.freeze()  # what exists at start (modules, classes) is never garbage
    gc.set_threshold(10_000, 20, 1_000)
