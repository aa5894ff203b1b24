"""The process's CPU cores as a budget that decodes take turns with.

    Context.decode: with CORES.hold(threads of this decode): llama_decode

Every thread that runs a decode has an OpenMP team of its own (ggml's CPU threads): each
model's engine thread, and the event loop when it computes a short embedding itself. Two teams
computing at once on more threads than there are cores stall each other at every barrier of
their graphs: a thread waits, spinning, for one that is not running. libgomp guards against it
only by spinning less once the process holds more OpenMP threads than CPUs, idle ones included,
which made a lone chat model ~40% slower as soon as an embedding model had run beside it (on 2
cores); with the spin that avoids that (OMP_WAIT_POLICY=active, native/_lib.py), two models
decoding at once fell to ~40% of their combined tokens/s. So a decode takes as many cores as it
runs threads (all of them at most) and waits while they are taken: on 2 cores two models'
decodes alternate, each at full speed; on 16, two decodes of 8 threads run side by side. A
model with every layer on a GPU takes one core (its CPU threads mostly wait for the device).

Only decodes of up to TAKE_TURNS_TOKENS tokens take turns (the token steps of running streams,
drafts, a sentence to embed). A prompt step longer than that neither waits nor holds: had it
taken its turn, another model's stream would get one token per prompt step (gaps of 0.7-3.4 s
beside a 1,500-word prompt on 2 cores, SmolLM2 twice); sharing the cores, that stream's
largest gap was 41-47 ms (its 300 tokens took 7.5-8.1 s against 3.5 s before any of this,
when it was the prompt that slowed down instead).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from botframework.config import usable_cpus


class ComputeCores:
    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("need at least one core")
        self.total = total
        self._free = total
        self._cv = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()  # waiters, in order of arrival
        self.num_waits = 0  # holds that had to wait for cores
        self._local = threading.local()  # .held: the cores this thread holds
        self._yield_flags: list[Any] = []  # of the holds running several steps (hold's yield_flag)

    @property
    def free(self) -> int:
        return self._free

    @contextlib.contextmanager
    def hold(self, threads: int, *, wait: bool = True, yield_flag: Any = None) -> Iterator[bool]:
        """Take min(threads, total) cores for the block and yield True; while they are not
        free, or others wait already, wait in line (first come, first served: a thread that
        decodes again right after its decode does not overtake one that waits). wait=False:
        yield False at once instead of waiting. A thread that holds cores already (an outer
        hold) passes through. `yield_flag` (an int array, e.g. cffi's int32_t[1]): a block that
        runs several decodes (engine.run_steps) and ends early once flag[0] is nonzero; a
        thread that starts waiting for cores meanwhile sets it."""
        if getattr(self._local, "held", 0):
            yield True
            return
        need = max(1, min(threads, self.total))
        if not self._acquire(need, wait):
            yield False
            return
        self._local.held = need
        if yield_flag is not None:
            with self._cv:
                self._yield_flags.append(yield_flag)
                if self._queue:
                    yield_flag[0] = 1
        try:
            yield True
        finally:
            self._local.held = 0
            with self._cv:
                if yield_flag is not None:
                    self._yield_flags = [flag for flag in self._yield_flags if flag is not yield_flag]
                self._free += need
                self._cv.notify_all()

    def _acquire(self, need: int, wait: bool) -> bool:
        with self._cv:
            if not self._queue and self._free >= need:
                self._free -= need
                return True
            if not wait:
                return False
            self.num_waits += 1
            ticket = object()
            self._queue.append(ticket)
            for flag in self._yield_flags:  # a run of several decodes ends after its current one
                flag[0] = 1
            try:
                while self._queue[0] is not ticket or self._free < need:
                    self._cv.wait()
            except BaseException:  # (an interrupt while waiting) the line must not stop at this ticket
                self._queue.remove(ticket)
                self._cv.notify_all()
                raise
            self._queue.popleft()
            if self._queue:  # the next in line may fit beside this one
                self._cv.notify_all()
            self._free -= need
            return True


CORES = ComputeCores(usable_cpus())
TAKE_TURNS_TOKENS = 64  # decodes of at most this many tokens take turns; longer ones do not wait
