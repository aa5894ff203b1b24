"""Logits processors: Python code that changes a step's logits before sampling.

    request.logits_processors --PlanItem.processors--> Engine (first item: bind(model), kept
        per request like its sampler)
    each step, after llama_decode: the rows of the sequences that named processors
        -> run_processors: one call per processor per step, over every sequence that named it:
           processor(logits[rows], histories)   (in place; a view of llama.cpp's buffer)
        -> each request's SamplerChain samples from what they left

A processor is any callable `(logits, histories) -> None`:
  logits     float32 array (num_rows, n_vocab), one row per sequence that named it in this
             step, changed in place (set a logit to -inf to ban a token). A view of llama.cpp's
             logits buffer when the rows lie evenly spaced in it (the usual case: outputs are
             in batch order), else a copy the engine writes back after the call.
  histories  one token sequence per row: the prompt and what was generated so far (the
             scheduler's own lists: read them, never change them)
It may also have `bind(model) -> processor`, called once per request and loaded model on the
engine thread (e.g. to read the model's vocabulary); return the same object for every request
of a model (cache it) so that their rows are processed in one call.

Costs: none for a step where no sequence names a processor (one dict check per step). For
one that does: a Python call per processor, the processors' own numpy work, and a max over
each processed row (a row left without a finite logit fails its request). Sequences that
name no processor are not touched.

A processor that raises fails only the requests whose rows it had (LogitsProcessorError,
their final delta); the others in the batch go on. Several processors on one request run in
the order it names them; processors shared by many requests are grouped per position.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from botframework.errors import BotframeworkError, InvalidRequestError

__all__ = ["LogitsProcessor", "LogitsProcessorError", "bind_processors", "check_processors", "processor_name",
           "run_processors"]

log = logging.getLogger("botframework.engine")


class LogitsProcessor(Protocol):
    def __call__(self, logits: np.ndarray, histories: Sequence[Sequence[int]]) -> None: ...


class LogitsProcessorError(BotframeworkError):
    """A logits processor raised, could not be bound, or left a row without a finite logit;
    `processor` names it. Only the requests that named it end with this error."""

    def __init__(self, message: str, *, processor: str) -> None:
        super().__init__(message)
        self.processor = processor


def processor_name(processor: object) -> str:
    name = getattr(processor, "name", None) or getattr(processor, "__name__", None)
    return str(name) if name else type(processor).__name__


def check_processors(processors: Sequence[object], param: str = "logits_processors") -> tuple[Any, ...]:
    """The processors as a tuple; InvalidRequestError (param) unless each is callable."""
    if isinstance(processors, (str, bytes)) or not isinstance(processors, Sequence):
        raise InvalidRequestError(f"'{param}' must be a list of logits processors", param=param)
    for processor in processors:
        if not callable(processor):
            raise InvalidRequestError(f"'{param}' holds {processor!r}, which is not callable: a logits processor is "
                                      "a callable (logits, histories) -> None", param=param)
    return tuple(processors)


def bind_processors(processors: Sequence[Any], model: Any) -> tuple[Any, ...]:
    """Each processor bound to the model (its `bind(model)` if it has one); LogitsProcessorError
    naming the one whose bind raised."""
    bound = []
    for processor in processors:
        bind = getattr(processor, "bind", None)
        if bind is None:
            bound.append(processor)
            continue
        try:
            bound.append(bind(model))
        except Exception as exc:
            name = processor_name(processor)
            raise LogitsProcessorError(f"logits processor {name!r} could not be set up: {type(exc).__name__}: {exc}",
                                       processor=name) from exc
    return tuple(bound)


def run_processors(logits: np.ndarray, rows: Sequence[int], chains: Sequence[Sequence[Any]],
                   histories: Sequence[Sequence[int]]) -> dict[int, LogitsProcessorError]:
    """Apply each entry's processors to logits[rows[k]] in place; the failures, by entry.

    Entry k is one sequence of the step: its row in `logits` (a 2-D array over the step's
    outputs), its bound processors in order, its history. Processors are called once per
    position in the chains, with the rows of every entry that has that processor there.
    """
    failed: dict[int, LogitsProcessorError] = {}
    depth = max((len(chain) for chain in chains), default=0)
    for position in range(depth):
        groups: dict[int, tuple[Any, list[int]]] = {}
        for k, chain in enumerate(chains):
            if position < len(chain) and k not in failed:
                processor = chain[position]
                groups.setdefault(id(processor), (processor, []))[1].append(k)
        for processor, members in groups.values():
            picked = [rows[k] for k in members]
            block, view = _rows(logits, picked)
            try:
                processor(block, [histories[k] for k in members])
            except Exception as exc:
                name = processor_name(processor)
                log.warning("logits processor %r failed", name, exc_info=True)
                error = LogitsProcessorError(f"logits processor {name!r} failed: {type(exc).__name__}: {exc}",
                                             processor=name)
                for k in members:
                    failed[k] = error
                continue
            if not view:
                logits[picked] = block
    if depth:
        _check_finite(logits, rows, chains, failed)
    return failed


def _rows(logits: np.ndarray, picked: list[int]) -> tuple[np.ndarray, bool]:
    """logits[picked] as a view when the rows are evenly spaced (True), else a copy (False)."""
    first = picked[0]
    if len(picked) == 1:
        return logits[first:first + 1], True
    step = picked[1] - first
    if step > 0 and all(b - a == step for a, b in zip(picked, picked[1:], strict=False)):
        return logits[first:picked[-1] + 1:step], True
    return logits[picked], False


def _check_finite(logits: np.ndarray, rows: Sequence[int], chains: Sequence[Sequence[Any]],
                  failed: dict[int, LogitsProcessorError]) -> None:
    """A row whose best logit is -inf, +inf or NaN (a NaN anywhere makes max NaN) cannot be
    sampled from: its request fails here, naming its processors, instead of sampling garbage.
    (One max over the rows and one check when all is well: Python right after a decode runs
    on cold caches, so every numpy call counts.)"""
    block, _view = _rows(logits, list(rows))
    best_per_row = block.max(axis=1)
    if np.isfinite(best_per_row).all():
        return
    for k in range(len(rows)):
        if k in failed or not chains[k]:
            continue
        best = best_per_row[k]
        if not np.isfinite(best):
            names = ", ".join(repr(processor_name(p)) for p in chains[k])
            what = ("a NaN" if np.isnan(best) else "+inf (to force a token, set the others to -inf)" if best > 0
                    else "no finite logit")
            failed[k] = LogitsProcessorError(f"after logits processor(s) {names} the logits hold {what}: no token "
                                             "can be sampled", processor=processor_name(chains[k][-1]))
