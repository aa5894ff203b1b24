"""L1: execute one step for many sequences.

    StepPlan (plain data) -> Engine.execute: KV ops, fill one Batch, one llama_decode,
    sample each sequence that asked for a token -> StepResult (plain data)

`step`, `detokenizer` and `stops` are plain Python; `Engine` (native) loads on first use, so the
scheduler and its tests import this package without the compiled module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.engine.step import KVOp, PlanItem, SampledToken, StepPlan, StepResult
from botframework.engine.stops import StopMatcher

if TYPE_CHECKING:
    from botframework.engine.engine import Engine


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from botframework.engine.engine import Engine

        return Engine
    raise AttributeError(f"module 'botframework.engine' has no attribute {name!r}")


__all__ = ["Engine", "IncrementalDetokenizer", "KVOp", "PlanItem", "SampledToken", "StepPlan", "StepResult",
           "StopMatcher"]
