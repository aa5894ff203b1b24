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


class RecordingSink:
    """A DirectSink that takes deltas whose text is in `take`, detaching after those in `last`."""

    def __init__(self, take: str, last: str = "") -> None:
        self.take_texts, self.last, self.taken = take, last, []  # type: ignore[var-annotated]

    def take(self, delta: Delta):  # type: ignore[no-untyped-def]
        from botframework.scheduler.output import Taken

        if delta.text not in self.take_texts:
            return Taken.NO
        self.taken.append(delta.text)
        return Taken.YES_DETACH if delta.text in self.last else Taken.YES


def test_a_direct_sink_takes_deltas_until_it_declines_one() -> None:
    loop = asyncio.new_event_loop()
    handle = RequestHandle("r", lambda _id: None, loop)
    sink = RecordingSink(take="abdefz")
    try:
        assert handle.attach_direct(sink)
        for text in "abcd":  # c is declined: it goes to the consumer, and d too (the sink let go)
            handle.publish(Delta("r", text=text))
        deltas = handle.__aiter__()
        assert [loop.run_until_complete(anext(deltas)).text for _ in range(2)] == ["c", "d"]
        assert handle.attach_direct(sink)
        handle.publish(Delta("r", text="e"))
        handle.publish(Delta("r", text="z", finish_reason=FinishReason.STOP))  # the last is never offered
        assert loop.run_until_complete(anext(deltas)).text == "z"
        assert sink.taken == ["a", "b", "e"] and handle.finished.is_set()
        assert not handle.attach_direct(sink)  # finished
    finally:
        loop.close()


def test_a_direct_sink_is_attached_only_when_nothing_is_on_its_way_and_may_detach_itself() -> None:
    loop = asyncio.new_event_loop()
    handle = RequestHandle("r", lambda _id: None, loop)
    try:
        handle.publish(Delta("r", text="q"))
        assert not handle.attach_direct(RecordingSink(take="x"))  # q is not consumed yet: x would overtake it
        deltas = handle.__aiter__()
        assert loop.run_until_complete(anext(deltas)).text == "q"
        sink = RecordingSink(take="xy", last="x")
        assert handle.attach_direct(sink)
        handle.publish(Delta("r", text="x"))  # taken, and the sink lets go
        handle.publish(Delta("r", text="y"))  # so this one is the consumer's
        assert loop.run_until_complete(anext(deltas)).text == "y"
        assert handle.attach_direct(sink)
        handle.detach_direct()
        handle.publish(Delta("r", text="x"))
        assert loop.run_until_complete(anext(deltas)).text == "x" and sink.taken == ["x"]
    finally:
        loop.close()
