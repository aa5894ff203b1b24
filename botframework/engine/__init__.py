"""L1: execute one step for many sequences.

    StepPlan (plain data) -> Engine.execute: KV ops, fill one Batch, one llama_decode,
    sample each sequence that asked for a token -> StepResult (plain data)
"""

from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.engine.engine import Engine
from botframework.engine.sampling_params import SamplingParams
from botframework.engine.step import KVOp, PlanItem, SampledToken, StepPlan, StepResult
from botframework.engine.stops import StopMatcher

__all__ = ["Engine", "IncrementalDetokenizer", "KVOp", "PlanItem", "SampledToken", "SamplingParams",
           "StepPlan", "StepResult", "StopMatcher"]
