"""L2: continuous batching. schedule() -> StepPlan; update(plan, result) -> outputs.

Pure Python over plain data: tested on a fake engine without a model.
"""

from botframework.scheduler.output import Delta, FinishReason, RequestHandle, Usage
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig
from botframework.scheduler.sequence import Priority, Request, Sequence, SequenceStatus

__all__ = ["Delta", "FinishReason", "Priority", "Request", "RequestHandle", "Scheduler",
           "SchedulerConfig", "Sequence", "SequenceStatus", "Usage"]
