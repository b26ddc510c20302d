"""Read models folded in memory from the whole log, for `projections rebuild` (see common.py for how
a fold mirrors its projection's SQL). One module per read model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from projections.folds.cases import CasesFold
from projections.folds.common import Aliases, Columns, RawJson, Unstorable, storable
from projections.folds.metrics import MetricsFold
from projections.folds.profile import ProfileFold
from projections.folds.timeline import TimelineFold

__all__ = [
    "FOLDS",
    "Aliases",
    "CasesFold",
    "Columns",
    "MetricsFold",
    "ProfileFold",
    "RawJson",
    "TimelineFold",
    "Unstorable",
    "storable",
]

# Projection name → its fold. A projection without one is rebuilt by its own `apply`, in chunks.
FOLDS: dict[str, Callable[..., Any]] = {
    "timeline": TimelineFold,
    "profile": ProfileFold,
    "cases": CasesFold,
    "metrics": MetricsFold,
}
