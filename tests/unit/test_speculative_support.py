"""Models whose memory cannot drop a sequence's last cells (recurrent, hybrid) never draft:
SchedulerConfig.can_draft=False, set by the worker from Model.is_recurrent / is_hybrid."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from test_speculative import CopyingEngine, make_seq, outcome, prompt, run

from botframework.config import WorkerConfig
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig


@pytest.mark.parametrize("asked", [None, True])
def test_no_drafts_when_the_model_cannot_drop_cells(asked: bool | None) -> None:
    outcomes = []
    for allowed in (True, False):
        cfg = SchedulerConfig(num_slots=2, num_ctx=1024, max_batch_tokens=64, speculative="ngram", can_draft=allowed)
        s, engine = Scheduler(cfg, eog_tokens=frozenset()), CopyingEngine(cfg.num_slots, cfg.max_batch_tokens)
        seq = make_seq(prompt(), max_tokens=80, speculative=asked)
        s.add(seq)
        run(s, engine)
        outcomes.append((seq, s))
    (drafted, s_on), (plain, s_off) = outcomes
    assert s_on.num_draft_tokens > 0
    assert s_off.num_draft_tokens == 0 and plain.drafter is None and plain.num_draft_tokens == 0
    assert outcome(plain) == outcome(drafted)


@pytest.mark.native  # botframework.runtime.worker imports the compiled module
@pytest.mark.parametrize(("recurrent", "hybrid", "speculative", "level"), [
    (True, False, "ngram", logging.WARNING), (False, True, "none", logging.INFO)])
def test_worker_turns_drafting_off_with_a_log_line(caplog: pytest.LogCaptureFixture, recurrent: bool, hybrid: bool,
                                                   speculative: str, level: int) -> None:
    from botframework.runtime.worker import can_draft

    model = SimpleNamespace(is_recurrent=recurrent, is_hybrid=hybrid)
    with caplog.at_level(logging.INFO, logger="botframework.runtime"):
        assert not can_draft(model, "m", WorkerConfig(speculative=speculative))  # type: ignore[arg-type]
    [record] = caplog.records
    assert record.levelno == level and "speculative decoding off" in record.getMessage()
    assert ("recurrent" if recurrent else "hybrid") in record.getMessage()


@pytest.mark.native
def test_a_transformer_drafts(caplog: pytest.LogCaptureFixture) -> None:
    from botframework.runtime.worker import can_draft

    model = SimpleNamespace(is_recurrent=False, is_hybrid=False)
    with caplog.at_level(logging.INFO, logger="botframework.runtime"):
        assert can_draft(model, "m", WorkerConfig(speculative="ngram"))  # type: ignore[arg-type]
    assert not caplog.records
