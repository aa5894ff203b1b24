"""RequestHandle delivery to asyncio consumers: one event-loop wake-up per engine step."""

from __future__ import annotations

import asyncio
import threading

from botframework.scheduler.output import Delta, FinishReason, RequestHandle, batched


def test_a_step_wakes_each_loop_once_and_keeps_order() -> None:
    loop = asyncio.new_event_loop()
    wakeups = 0
    real = loop.call_soon_threadsafe

    def counting(callback, *args):  # type: ignore[no-untyped-def]
        nonlocal wakeups
        wakeups += 1
        return real(callback, *args)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    handles = [RequestHandle(f"r{i}", lambda _id: None, loop) for i in range(3)]

    def engine() -> None:  # two steps, three requests each, as the engine thread publishes them
        for step in range(2):
            with batched():
                for i, handle in enumerate(handles):
                    finish = FinishReason.LENGTH if step == 1 else None
                    handle.publish(Delta(f"r{i}", text=f"{i}.{step}", finish_reason=finish))

    async def consume(handle: RequestHandle) -> list[str]:
        return [delta.text async for delta in handle]

    async def main() -> list[list[str]]:
        thread = threading.Thread(target=engine)
        thread.start()
        out = await asyncio.gather(*(consume(h) for h in handles))
        thread.join()
        return out

    try:
        texts = loop.run_until_complete(main())
    finally:
        loop.close()
    assert texts == [[f"{i}.0", f"{i}.1"] for i in range(3)]
    assert wakeups == 2
    assert all(h.finished.is_set() for h in handles)


def test_outside_a_step_each_delta_is_delivered_at_once() -> None:
    loop = asyncio.new_event_loop()
    handle = RequestHandle("r", lambda _id: None, loop)
    handle.publish(Delta("r", text="a"))
    handle.publish(Delta("r", text="b", finish_reason=FinishReason.STOP))

    async def consume() -> list[str]:
        return [delta.text async for delta in handle]

    try:
        assert loop.run_until_complete(consume()) == ["a", "b"]
    finally:
        loop.close()


def test_sync_consumers_are_not_held_back_by_a_step() -> None:
    handle = RequestHandle("r", lambda _id: None)
    with batched():
        handle.publish(Delta("r", text="a", finish_reason=FinishReason.STOP))
        assert handle.finished.is_set()
    assert [d.text for d in handle] == ["a"]


def test_first_and_last_deltas_are_reported_and_handled_once_the_consumer_asks_for_more() -> None:
    """The engine waits (RequestHandle.wait_handled) for a request's first and last tokens to
    be sent before its next decode: batched() lists the asyncio handles whose first or last
    delta it published; the handle counts that delta handled when its consumer asks for more."""
    loop = asyncio.new_event_loop()
    handle = RequestHandle("r", lambda _id: None, loop)
    one_token = RequestHandle("d", lambda _id: None, loop)
    sync = RequestHandle("s", lambda _id: None)
    with batched() as waits:
        handle.publish(Delta("r", text="a"))
        one_token.publish(Delta("d", text="x", finish_reason=FinishReason.STOP))
        sync.publish(Delta("s", text="y"))
        assert waits == []  # filled when the block ends
    assert waits == [handle, one_token]
    assert not handle.wait_handled(0.01)
    with batched() as middle:
        handle.publish(Delta("r", text="b"))
    assert middle == []

    async def consume() -> list[str]:
        deltas = handle.__aiter__()
        first = await deltas.__anext__()
        assert not handle.wait_handled(0)  # taken, but its chunk may not be sent yet
        second = await deltas.__anext__()
        assert handle.wait_handled(0)  # it came back for more: the first was handled
        with batched() as last:  # the engine publishes the last delta meanwhile
            handle.publish(Delta("r", text="c", finish_reason=FinishReason.STOP))
        assert last == [handle] and not handle.wait_handled(0)
        third = await deltas.__anext__()
        assert not handle.wait_handled(0)
        assert [delta.text async for delta in deltas] == []
        return [first.text, second.text, third.text]

    try:
        assert loop.run_until_complete(consume()) == ["a", "b", "c"]
    finally:
        loop.close()
    assert handle.wait_handled(0)


def test_a_consumer_that_gives_up_does_not_keep_the_engine_waiting() -> None:
    loop = asyncio.new_event_loop()
    handle = RequestHandle("r", lambda _id: None, loop)
    handle.publish(Delta("r", text="a"))

    async def first_only() -> str:
        deltas = handle.__aiter__()
        text = (await deltas.__anext__()).text
        await deltas.aclose()  # type: ignore[attr-defined]
        return text

    try:
        assert loop.run_until_complete(first_only()) == "a"
    finally:
        loop.close()
    assert handle.wait_handled(0)
