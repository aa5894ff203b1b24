"""ComputeCores (botframework/native/cores.py): decodes take turns with the process's cores."""

from __future__ import annotations

import threading

from botframework.native.cores import ComputeCores


def _holder(cores: ComputeCores, threads: int, log: list[str], name: str, started: threading.Event | None = None,
            release: threading.Event | None = None) -> threading.Thread:
    def run() -> None:
        with cores.hold(threads):
            log.append(f"{name}+")
            if started is not None:
                started.set()
            if release is not None:
                assert release.wait(10)
            log.append(f"{name}-")
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _held_by_another(cores: ComputeCores, threads: int, log: list[str]) -> tuple[threading.Thread, threading.Event]:
    """Thread "a" holding `threads` cores until the returned event is set."""
    started, release = threading.Event(), threading.Event()
    thread = _holder(cores, threads, log, "a", started, release)
    assert started.wait(10)
    return thread, release


def _wait_for_waiters(cores: ComputeCores, count: int) -> None:
    for _ in range(1000):
        with cores._cv:
            if len(cores._queue) >= count:
                return
        threading.Event().wait(0.005)
    raise AssertionError(f"{count} waiters never queued")


def test_a_decode_that_needs_every_core_waits_for_the_one_holding_them() -> None:
    cores = ComputeCores(2)
    log: list[str] = []
    first, release = _held_by_another(cores, 2, log)
    second = _holder(cores, 2, log, "b")
    _wait_for_waiters(cores, 1)
    assert log == ["a+"] and cores.free == 0 and cores.num_waits == 1
    release.set()
    first.join(10)
    second.join(10)
    assert log == ["a+", "a-", "b+", "b-"] and cores.free == 2


def test_decodes_whose_threads_fit_run_side_by_side_and_more_threads_than_cores_take_them_all() -> None:
    cores = ComputeCores(4)
    log: list[str] = []
    a_in, b_in, release = threading.Event(), threading.Event(), threading.Event()
    a = _holder(cores, 2, log, "a", a_in, release)
    b = _holder(cores, 2, log, "b", b_in, release)
    assert a_in.wait(10) and b_in.wait(10)  # both inside at once
    assert cores.free == 0 and cores.num_waits == 0
    release.set()
    a.join(10)
    b.join(10)
    with cores.hold(64):  # capped at the 4 there are
        assert cores.free == 0
    assert cores.free == 4


def test_waiters_are_served_in_order_of_arrival() -> None:
    """A thread that comes back for the cores does not overtake one already waiting."""
    cores = ComputeCores(2)
    log: list[str] = []
    first, release = _held_by_another(cores, 2, log)
    waiters = []
    for i, name in enumerate(("b", "c", "d")):
        waiters.append(_holder(cores, 2, log, name))
        _wait_for_waiters(cores, i + 1)
    release.set()
    for thread in (first, *waiters):
        thread.join(10)
    assert log == ["a+", "a-", "b+", "b-", "c+", "c-", "d+", "d-"]
    assert cores.free == 2 and not cores._queue


def test_the_cores_come_back_when_the_block_raises() -> None:
    cores = ComputeCores(2)
    try:
        with cores.hold(2):
            raise RuntimeError("llama_decode failed")
    except RuntimeError:
        pass
    assert cores.free == 2


def test_without_waiting_a_hold_that_would_wait_yields_false_and_takes_nothing() -> None:
    cores = ComputeCores(2)
    log: list[str] = []
    holder, release = _held_by_another(cores, 1, log)
    with cores.hold(2, wait=False) as held:
        assert held is False and cores.free == 1
    with cores.hold(1, wait=False) as held:  # one is free
        assert held is True and cores.free == 0
    release.set()
    holder.join(10)
    assert cores.free == 2 and cores.num_waits == 0


def test_a_thread_that_holds_cores_passes_through_an_inner_hold() -> None:
    """An inline embedding holds the cores around its turn; the decode inside must not wait
    for the cores its own thread holds."""
    cores = ComputeCores(2)
    with cores.hold(2) as outer:
        with cores.hold(2) as inner:
            assert outer and inner and cores.free == 0
        assert cores.free == 0
    assert cores.free == 2


def test_a_waiter_interrupted_while_waiting_leaves_the_line() -> None:
    cores = ComputeCores(2)
    log: list[str] = []
    holder, release = _held_by_another(cores, 2, log)

    def interrupted(timeout: float | None = None) -> bool:
        raise KeyboardInterrupt

    cores._cv.wait = interrupted  # type: ignore[method-assign]
    try:
        with cores.hold(2):
            raise AssertionError("got cores that were taken")
    except KeyboardInterrupt:
        pass
    del cores._cv.wait
    assert not cores._queue
    release.set()
    holder.join(10)
    with cores.hold(2, wait=False) as held:  # the line did not stop at the interrupted ticket
        assert held


def test_a_run_of_decodes_is_told_to_end_when_another_thread_waits_for_its_cores() -> None:
    """hold(yield_flag=...): the flag is set when a thread starts waiting for cores (and at once
    when one waits already); the run gives the cores up and the waiter gets them."""
    cores = ComputeCores(2)
    flag = [0]
    log: list[str] = []
    in_run, gave_up = threading.Event(), threading.Event()

    def run() -> None:
        with cores.hold(2, yield_flag=flag):
            in_run.set()
            for _ in range(2000):  # the native run's loop: a decode, then a look at the flag
                if flag[0]:
                    break
                threading.Event().wait(0.005)
            log.append(f"run ended, flag {flag[0]}")
        gave_up.set()

    runner = threading.Thread(target=run)
    runner.start()
    assert in_run.wait(10) and flag == [0]
    with cores.hold(1):
        log.append("waiter in")
    runner.join(10)
    assert log == ["run ended, flag 1", "waiter in"] and gave_up.is_set()
    assert not cores._yield_flags and cores.free == 2

    log.clear()
    first, release = _held_by_another(cores, 2, log)  # a run that gets the cores with a waiter behind it
    late_flag = [0]
    late_run = threading.Thread(target=lambda: _hold_and_log(cores, late_flag, log))
    late_run.start()
    _wait_for_waiters(cores, 1)
    behind = _holder(cores, 1, log, "w")
    _wait_for_waiters(cores, 2)
    release.set()
    for thread in (first, late_run, behind):
        thread.join(10)
    assert log == ["a+", "a-", "run flag 1", "w+", "w-"]


def _hold_and_log(cores: ComputeCores, flag: list[int], log: list[str]) -> None:
    with cores.hold(2, yield_flag=flag):
        log.append(f"run flag {flag[0]}")
