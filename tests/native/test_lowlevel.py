"""The low-level API as docs/low-level.md teaches it, on the real model: logits as zero-copy
views equal to llama.cpp's own, KV sequence operations, state save/restore, and misuse as
the documented exceptions (never a crash)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from botframework.errors import ClosedError, DecodeError, InvalidRequestError
from botframework.native import Batch, Context, ContextParams, Model, SamplerChain, SamplerSpec
from botframework.native._lib import lib
from botframework.native.logits import logits_view, output_rows

pytestmark = pytest.mark.native
PROMPTS = ["The capital of France is", "def add(a, b):", "Once upon a time"]


@pytest.fixture
def ctx(model: Model) -> Iterator[Context]:
    with Context(model, ContextParams(n_ctx=512, n_batch=128, n_ubatch=128, n_seq_max=4, n_threads=2,
                                      n_threads_batch=2)) as context:
        yield context


def prefill(model: Model, ctx: Context, prompts: list[str] = PROMPTS) -> tuple[Batch, list[int], list[list[int]]]:
    """Every prompt as its own sequence (seq id = index) in one batch; the output indices."""
    batch = Batch(ctx.n_batch)
    tokens = [model.tokenize(p) for p in prompts]
    outputs = [batch.add_sequence(t, 0, seq_id, logits_last=True) for seq_id, t in enumerate(tokens)]
    ctx.decode(batch)
    return batch, outputs, tokens


def llama_greedy(ctx: Context, index: int) -> int:
    """llama.cpp's own greedy sampler reading the context's logits itself."""
    L = lib()
    sampler = L.llama_sampler_init_greedy()
    try:
        return int(L.llama_sampler_sample(sampler, ctx.handle, index))
    finally:
        L.llama_sampler_free(sampler)


def test_views_are_llama_cpps_logits_without_a_copy(model: Model, ctx: Context) -> None:
    _batch, outputs, _tokens = prefill(model, ctx)
    view = logits_view(ctx, outputs)
    assert view.shape == (3, model.n_vocab) and view.dtype == np.float32 and view.flags.writeable
    for row, index in enumerate(outputs):
        np.testing.assert_array_equal(view[row], ctx.logits_ith(index))  # llama_get_logits_ith, copied
        assert np.shares_memory(view, logits_view(ctx, index))
        assert int(np.argmax(view[row])) == llama_greedy(ctx, index)
    view[1, :] = -np.inf  # a write is what llama.cpp then reads: the same memory
    view[1, 42] = 0.0
    assert llama_greedy(ctx, outputs[1]) == 42 and ctx.logits_ith(outputs[1])[42] == 0.0
    span, rows = output_rows(ctx, [outputs[2], outputs[0]])
    assert rows.tolist() == [2, 0] and np.shares_memory(span, view)


def test_a_batch_of_sequences_reads_like_each_sequence_alone(model: Model, ctx: Context) -> None:
    _batch, outputs, tokens = prefill(model, ctx)
    together = logits_view(ctx, outputs).copy()
    for seq_id, prompt in enumerate(tokens):
        ctx.memory.clear()
        one = Batch(ctx.n_batch)
        index = one.add_sequence(prompt, 0, seq_id, logits_last=True)
        ctx.decode(one)
        alone = logits_view(ctx, index)
        assert int(np.argmax(alone)) == int(np.argmax(together[seq_id]))
        np.testing.assert_allclose(alone, together[seq_id], atol=0.05)  # short prompts: the same kernels


def test_sampler_chain_and_numpy_sampling_agree_on_greedy(model: Model, ctx: Context) -> None:
    _batch, outputs, _tokens = prefill(model, ctx)
    view = logits_view(ctx, outputs)
    numpy_picks = view.argmax(axis=1).tolist()  # read before sampling: a view, valid until the next decode
    with SamplerChain(model, SamplerSpec(temperature=0.0)) as sampler:
        assert [sampler.sample(ctx, i) for i in outputs] == numpy_picks


def continue_greedy(ctx: Context, seq_id: int, token: int, pos: int, n: int) -> list[int]:
    out = []
    batch = Batch(8)
    for _ in range(n):
        batch.clear()
        index = batch.add_sequence([token], pos, seq_id, logits_last=True)
        ctx.decode(batch)
        token = int(np.argmax(logits_view(ctx, index)))
        out.append(token)
        pos += 1
    return out


def test_seq_cp_shares_a_prefix_and_seq_rm_keep_and_add_edit_it(model: Model, ctx: Context) -> None:
    tokens = model.tokenize("The capital of France is")
    batch = Batch(64)
    index = batch.add_sequence(tokens, 0, 0, logits_last=True)
    ctx.decode(batch)
    first = int(np.argmax(logits_view(ctx, index)))
    mem = ctx.memory
    mem.seq_cp(0, 1)  # seq 1 shares every cell of seq 0: no recompute
    assert mem.pos_max(1) == len(tokens) - 1
    a = continue_greedy(ctx, 0, first, len(tokens), 4)
    b = continue_greedy(ctx, 1, first, len(tokens), 4)
    assert a == b
    assert mem.seq_rm(1, len(tokens), -1)  # drop seq 1's continuation
    assert mem.pos_max(1) == len(tokens) - 1
    mem.seq_keep(1)  # every other sequence goes
    assert mem.pos_max(0) == -1 and mem.pos_max(1) == len(tokens) - 1
    mem.seq_add(1, 0, -1, 10)  # shift its positions (context shift's building block)
    assert mem.pos_min(1) == 10 and mem.pos_max(1) == len(tokens) + 9


def test_state_save_and_restore_gives_the_same_continuation(model: Model, ctx: Context) -> None:
    tokens = model.tokenize("Once upon a time")
    batch = Batch(64)
    index = batch.add_sequence(tokens, 0, 2, logits_last=True)
    ctx.decode(batch)
    first = int(np.argmax(logits_view(ctx, index)))
    state = ctx.state_seq_get(2)
    before = continue_greedy(ctx, 2, first, len(tokens), 4)
    ctx.memory.seq_rm(2)
    ctx.state_seq_set(3, state)  # into another sequence id
    assert continue_greedy(ctx, 3, first, len(tokens), 4) == before


def test_a_state_that_will_not_load_ends_only_the_requests_on_its_sequence(model: Model, ctx: Context) -> None:
    from botframework.engine import Engine, PlanItem, StepPlan
    from botframework.engine.step import KVOp, KVOpKind
    from botframework.errors import StateRestoreError
    from botframework.native import SamplerSpec

    tokens = model.tokenize("Once upon a time")
    batch = Batch(64)
    batch.add_sequence(tokens, 0, 1, logits_last=True)
    ctx.decode(batch)
    cut = ctx.state_seq_get(1)[:100]  # a truncated state: llama.cpp reads past its end
    ctx.memory.clear()
    greedy = SamplerSpec(temperature=0.0)
    engine = Engine(model, ctx)
    try:
        plan = StepPlan(kv_ops=(KVOp(KVOpKind.RESTORE, 1, data=cut),
                                KVOp(KVOpKind.COPY, 2, 0, len(tokens), src_seq_id=1)),  # shares the lost cells
                        items=(PlanItem("fine", 0, tuple(tokens), 0, True, greedy),
                               PlanItem("restored", 1, (tokens[-1],), len(tokens), True, greedy),
                               PlanItem("copied", 2, (tokens[-1],), len(tokens), True, greedy)))
        by_id = {s.request_id: s for s in engine.execute(plan).sampled}
        assert by_id["fine"].error is None and by_id["fine"].token >= 0
        for request_id in ("restored", "copied"):
            assert isinstance(by_id[request_id].error, StateRestoreError), by_id[request_id]
        assert ctx.memory.pos_max(1) == -1 and ctx.memory.pos_max(2) == -1
        assert ctx.memory.pos_max(0) == len(tokens) - 1
        # a request planned for it a step later (its prefill waited for room) ends the same way
        later = engine.execute(StepPlan(items=(PlanItem("later", 1, (tokens[-1],), len(tokens), True, greedy),)))
        assert isinstance(later.sampled[0].error, StateRestoreError)
        # once its failed request's release empties it (a REMOVE), the sequence serves again
        for request_id in ("fine", "restored", "copied", "later"):
            engine.release(request_id)
        again = engine.execute(StepPlan(kv_ops=(KVOp(KVOpKind.REMOVE, 1), KVOp(KVOpKind.REMOVE, 2)),
                                        items=(PlanItem("again", 1, tuple(tokens), 0, True, greedy),)))
        assert again.sampled[0].error is None and again.sampled[0].token == by_id["fine"].token
    finally:
        engine.close()
        ctx.memory.clear()


# -- misuse: the documented exceptions ----------------------------------------------------

def test_out_of_range_sequence_ids_raise(model: Model, ctx: Context) -> None:
    mem = ctx.memory
    for call in (lambda: mem.seq_rm(4), lambda: mem.seq_cp(0, 300), lambda: mem.seq_keep(-2),
                 lambda: mem.seq_add(9, 0, -1, 1), lambda: mem.pos_max(4), lambda: ctx.state_seq_get(4),
                 lambda: ctx.state_seq_set(-1, b"")):
        with pytest.raises(InvalidRequestError, match="out of range"):
            call()
    batch = Batch(8)
    batch.add_sequence(model.tokenize("hi"), 0, 7, logits_last=True)
    with pytest.raises(InvalidRequestError, match="sequence id 7"):
        ctx.decode(batch)


def test_a_batch_over_its_capacity_or_the_context_raises(model: Model, ctx: Context) -> None:
    batch = Batch(4)
    batch.add_sequence([1, 2, 3], 0, 0, logits_last=False)
    with pytest.raises(InvalidRequestError, match="batch is full"):
        batch.add_sequence([4, 5], 3, 0, logits_last=True)
    batch.add(9, 3, 0, True)  # the fourth token fits
    with pytest.raises(InvalidRequestError, match="batch is full"):
        batch.add(9, 4, 0, True)
    big = Batch(ctx.n_batch + 1)
    big.add_sequence(list(range(1, ctx.n_batch + 2)), 0, 0, logits_last=True)
    with pytest.raises(InvalidRequestError, match="exceeds n_batch"):
        ctx.decode(big)


def test_a_token_outside_the_vocabulary_raises(model: Model, ctx: Context) -> None:
    with pytest.raises(InvalidRequestError, match="out of vocabulary"):
        model.check_tokens([model.n_vocab])
    batch = Batch(4)
    batch.add_sequence([model.n_vocab + 5], 0, 0, logits_last=True)
    with pytest.raises(DecodeError, match="invalid batch"):
        ctx.decode(batch)
    assert ctx.memory.pos_max(0) == -1  # refused before anything changed


def test_logits_of_a_token_that_asked_for_none_raise(model: Model, ctx: Context) -> None:
    batch = Batch(16)
    tokens = model.tokenize("The capital of France is")
    last = batch.add_sequence(tokens, 0, 0, logits_last=True)
    ctx.decode(batch)
    with pytest.raises(InvalidRequestError, match="has no logits"):
        logits_view(ctx, 0)
    with pytest.raises(InvalidRequestError, match="has no logits"):
        logits_view(ctx, [last, 0])
    with pytest.raises(InvalidRequestError):
        output_rows(ctx, [])


def test_everything_on_a_closed_context_raises_closed_error(model: Model) -> None:
    ctx = Context(model, ContextParams(n_ctx=256, n_batch=64, n_seq_max=2))
    batch = Batch(8)
    index = batch.add_sequence(model.tokenize("hi"), 0, 0, logits_last=True)
    ctx.decode(batch)
    sampler = SamplerChain(model, SamplerSpec(temperature=0.0))
    ctx.close()
    ctx.close()  # idempotent
    for call in (lambda: ctx.decode(batch), lambda: logits_view(ctx, index), lambda: ctx.logits_ith(index),
                 lambda: ctx.memory.seq_rm(0), lambda: ctx.memory.clear(), lambda: ctx.state_seq_get(0),
                 lambda: sampler.sample(ctx, index)):
        with pytest.raises(ClosedError):
            call()
    sampler.close()
    with pytest.raises(ClosedError):
        sampler.sample(ctx, index)
    batch.close()
    with pytest.raises(ClosedError):
        batch.add_sequence([1], 0, 0, logits_last=True)


def test_a_run_of_steps_decodes_as_steps_one_at_a_time_and_stops_where_told(model: Model, ctx: Context) -> None:
    """Engine.run_steps (bf_decode_run): three sequences for 12 steps in one native call sample
    what decoding them one step at a time does; a set interrupt flag ends a run after its
    first step; an end-of-generation token ends it for a sequence that stops on one."""
    from botframework.engine import Engine, PlanItem, StepPlan
    from botframework.native._lib import ffi

    greedy = SamplerSpec(temperature=0.0)
    _batch, outputs, tokens = prefill(model, ctx)
    firsts = [llama_greedy(ctx, index) for index in outputs]
    expected = [continue_greedy(ctx, seq_id, firsts[seq_id], len(tokens[seq_id]), 12) for seq_id in range(3)]
    for seq_id in range(3):  # back to the prompts
        ctx.memory.seq_rm(seq_id, len(tokens[seq_id]), -1)

    engine = Engine(model, ctx)
    interrupt = ffi.new("int32_t[1]")
    try:
        def items(step: int, sampled: list[list[int]]) -> tuple[PlanItem, ...]:
            return tuple(PlanItem(f"r{seq_id}", seq_id, ((firsts[seq_id], *sampled[seq_id])[step],),
                                  len(tokens[seq_id]) + step, sample=True, sampler=greedy) for seq_id in range(3))

        first = engine.execute(StepPlan(items=items(0, [[], [], []])))  # builds the samplers
        sampled = [[s.token] for s in first.sampled]
        run = engine.run_steps(StepPlan(items=items(1, sampled)), 11, (False, False, False), interrupt)
        assert run.num_steps == 11 and run.decode_ms > 0
        assert [s + list(t) for s, t in zip(sampled, run.tokens, strict=True)] == expected

        for seq_id in range(3):
            ctx.memory.seq_rm(seq_id, len(tokens[seq_id]) + 12, -1)
        interrupt[0] = 1
        more = engine.run_steps(StepPlan(items=tuple(
            PlanItem(f"r{i}", i, (expected[i][-1],), len(tokens[i]) + 12, sample=True) for i in range(3))),
            50, (False, False, False), interrupt)
        assert more.num_steps == 1 and all(len(t) == 1 for t in more.tokens)

        # a map of stop bytes for sequence 1: the run ends after the first step whose token's
        # text has that byte (here the last byte of its 6th run token's text)
        for seq_id in range(3):
            ctx.memory.seq_rm(seq_id, len(tokens[seq_id]) + 1, -1)
        pieces = [model.token_to_piece(t, special=True) for t in run.tokens[1]]
        byte = next(piece[-1] for piece in pieces[5:] if piece)
        end = next(j for j, piece in enumerate(pieces) if byte in piece)
        maps = bytearray(96)
        maps[32 + (byte >> 3)] |= 1 << (byte & 7)
        interrupt[0] = 0
        cut = engine.run_steps(StepPlan(items=items(1, sampled)), 11, (False, False, False), interrupt, bytes(maps))
        assert cut.num_steps == end + 1 and [list(t) for t in cut.tokens] == [list(t[:end + 1]) for t in run.tokens]
    finally:
        engine.close()

    ctx.memory.clear()
    eos = model.special.eos
    assert eos in model.eog_tokens
    engine = Engine(model, ctx)
    forced = SamplerSpec(temperature=0.0, logit_bias={eos: 100.0})  # the end of generation, every time
    try:
        prompt = model.tokenize("Hello")
        for seq_id, stop_on_eog, steps in ((0, True, 1), (1, False, 5)):
            first = engine.execute(StepPlan(items=(PlanItem(f"e{seq_id}", seq_id, tuple(prompt), 0, sample=True,
                                                            sampler=forced),)))
            assert first.sampled[0].token == eos
            interrupt[0] = 0
            run = engine.run_steps(StepPlan(items=(PlanItem(f"e{seq_id}", seq_id, (eos,), len(prompt), sample=True),)),
                                   5, (stop_on_eog,), interrupt)
            assert run.num_steps == steps and run.tokens == ((eos,) * steps,)
    finally:
        engine.close()


def _chunks(model: Model, tokens: tuple[int, ...], head: bytes, tail: bytes, *, rstrip: bool = False,
            pending: str = "", number: int = -1, number_tail: bytes = b"") -> list[bytes]:
    """What a native stream sends for these tokens, written the way server/direct.py frames a
    chunk (head + json's encode_basestring of the text + tail, as an HTTP/1.1 chunk; numbered
    from `number` when it is >= 0)."""
    from json.encoder import encode_basestring  # type: ignore[attr-defined]

    frames = []
    for token in tokens:
        text = pending + model.token_to_piece(token).decode("ascii")
        body_text = text.rstrip() if rstrip else text
        pending = text[len(body_text):]
        if body_text:
            body = head + encode_basestring(body_text).encode() + tail
            if number >= 0:
                body += b"%d" % number + number_tail
                number += 1
            frames.append(b"%x\r\n%b\r\n" % (len(body), body))
    return frames


def test_a_run_sends_a_streamed_sequences_chunks_to_its_socket(model: Model, ctx: Context) -> None:
    """bf_decode_run with a bf_run_stream: each ASCII token's chunk goes to the socket as it is
    sampled, byte for byte what the server's direct stream writes, held whitespace included;
    the run ends after the first token it does not send (one past the budget, one with a byte
    in the map, one the socket does not take) and says how far it got; a chunk the socket took
    only part of comes back as `rest`; a closed peer is the send's errno."""
    import errno
    import socket
    import time

    from botframework.engine import Engine, PlanItem, StepPlan
    from botframework.engine.step import NativeStream
    from botframework.native._lib import ffi

    greedy = SamplerSpec(temperature=0.0)
    _batch, outputs, tokens = prefill(model, ctx)
    firsts = [llama_greedy(ctx, index) for index in outputs]
    engine = Engine(model, ctx)
    interrupt = ffi.new("int32_t[1]")
    head, tail = b'data: {"text":', b'}\n\n'
    ours, client = socket.socketpair()
    try:
        def items() -> tuple[PlanItem, ...]:
            return tuple(PlanItem(f"r{i}", i, (firsts[i],), len(tokens[i]), sample=True, sampler=greedy)
                         for i in range(3))

        def run(stream: NativeStream, steps: int = 12, maps: bytes = b"") -> tuple[tuple[int, ...], object, bytes]:
            for i in range(3):
                ctx.memory.seq_rm(i, len(tokens[i]), -1)
            result = engine.run_steps(StepPlan(items=items()), steps, (False,) * 3, interrupt, maps,
                                      (None, stream, None))
            client.setblocking(False)
            got = b""
            while True:
                try:
                    got += client.recv(1 << 20)
                except BlockingIOError:
                    break
            return result.tokens[1], result.sent[1], got

        engine.execute(StepPlan(items=items()))  # builds the samplers
        whole, sent, got = run(NativeStream(ours.fileno(), head, tail, False, "", 12))
        assert all(model.token_to_piece(t).isascii() for t in whole[:5])
        taken = sent.num_sent  # type: ignore[attr-defined]
        assert taken >= 5 and sent.error == 0 and sent.rest == b""  # type: ignore[attr-defined]
        assert len(whole) == (12 if taken == 12 else taken + 1)  # (a token it did not send ended the run)
        assert got == b"".join(_chunks(model, whole[:taken], head, tail))

        # the budget: 3 tokens sent, the run ends after the 4th
        part, sent, got = run(NativeStream(ours.fileno(), head, tail, False, "", 3))
        assert part == whole[:4] and sent.num_sent == 3  # type: ignore[attr-defined]
        assert got == b"".join(_chunks(model, whole[:3], head, tail))

        # numbered chunks (a Responses event's sequence_number): one number each, the next one comes back
        _, sent, got = run(NativeStream(ours.fileno(), head, b',"n":', True, "", 5, number=40,
                                           number_tail=b"}\n\n"))
        frames = _chunks(model, whole[:5], head, b',"n":', rstrip=True, number=40, number_tail=b"}\n\n")
        assert sent.num_sent == 5 and got == b"".join(frames)  # type: ignore[attr-defined]
        assert sent.number == 40 + len(frames) and len(frames) >= 3  # type: ignore[attr-defined]
        assert run(NativeStream(ours.fileno(), head, tail, False, "", 5))[1].number == -1  # type: ignore[attr-defined]

        # trailing whitespace waits for the text after it; what was held before the run goes first
        _, sent, got = run(NativeStream(ours.fileno(), head, tail, True, " \n", 5))
        assert sent.num_sent == 5  # type: ignore[attr-defined]
        assert got == b"".join(_chunks(model, whole[:5], head, tail, rstrip=True, pending=" \n"))

        # a byte in the map: that token is not sent, and the run ends after its step
        byte = next(model.token_to_piece(t)[0] for t in whole[2:] if model.token_to_piece(t))
        maps = bytearray(96)
        maps[32 + (byte >> 3)] |= 1 << (byte & 7)
        first = next(j for j, t in enumerate(whole) if byte in model.token_to_piece(t))
        part, sent, got = run(NativeStream(ours.fileno(), head, tail, False, "", 12), maps=bytes(maps))
        assert sent.num_sent == first and part == whole[:first + 1]  # type: ignore[attr-defined]

        # a full socket: nothing of the first chunk is taken (EAGAIN), the run ends after one step
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.setblocking(False)
        try:
            while True:
                ours.send(b"x" * 4096)
        except BlockingIOError:
            pass
        part, sent, _ = run(NativeStream(ours.fileno(), head, tail, False, "", 12, number=7, number_tail=b"}"))
        assert sent.num_sent == 0 and sent.error == errno.EAGAIN and len(part) == 1  # type: ignore[attr-defined]
        assert sent.number == 7  # type: ignore[attr-defined]  # (a chunk not taken has no number)

        # a closed peer: the first chunk is taken, its send's errno says the client is gone
        gone, peer = socket.socketpair()
        peer.close()
        try:
            _, sent, _ = run(NativeStream(gone.fileno(), head, tail, False, "", 12))
        finally:
            gone.close()
        assert sent.num_sent == 1 and sent.error in (errno.EPIPE, errno.ECONNRESET)  # type: ignore[attr-defined]

        # part of a chunk taken (a TCP connection with a little room): its end comes back
        with socket.create_server(("127.0.0.1", 0)) as server:
            sender = socket.create_connection(server.getsockname())
            receiver, _ = server.accept()
        with sender, receiver:
            sender.setblocking(False)
            receiver.setblocking(False)
            big = b"h" * 200_000
            for _attempt in range(200):
                try:
                    while True:
                        sender.send(b"x" * 65536)
                except BlockingIOError:
                    pass
                try:
                    receiver.recv(100_000)
                except BlockingIOError:
                    pass
                time.sleep(0.002)
                _, sent, _ = run(NativeStream(sender.fileno(), big, tail, False, "", 12), steps=2)
                if sent.rest:  # type: ignore[attr-defined]
                    break
            else:
                pytest.fail("the socket never took part of a chunk")
            # (the first chunk, or the second when the first went in whole)
            assert sent.num_sent in (1, 2) and sent.error == 0  # type: ignore[attr-defined]
            assert 0 < len(sent.rest) < len(big)  # type: ignore[attr-defined]
            assert sent.rest.endswith(tail + b"\r\n")  # type: ignore[attr-defined]
    finally:
        ours.close()
        client.close()
        engine.close()


def test_a_native_streams_chunk_is_pythons_for_every_ascii_byte() -> None:
    """bf_stream_format (the frame bf_decode_run's streams send): JSON escaping as json's
    encode_basestring and held whitespace as str.rstrip, for each of the 128 ASCII bytes alone,
    after held whitespace, and all in one piece; a numbered chunk has its number after the tail."""
    from json.encoder import encode_basestring  # type: ignore[attr-defined]

    from botframework.native._lib import ffi

    head, tail = b'data: {"x":', b'}\n\n'
    out = ffi.new("char[]", 4096)
    held = ffi.new("int32_t *")
    pieces = [bytes([b]) for b in range(128)] + [bytes(range(128)), b"a \t", b"  "]
    number_tail = b',"more":1}\n\n'
    for piece in pieces:
        for rstrip in (False, True):
            for pending in ("", " \n", "\x0b\x1c\t"):
                for number in (-1, 0, 7, 12345678901):
                    n = lib().bf_stream_format(head, len(head), tail, len(tail), number, number_tail,
                                               len(number_tail), pending.encode(), len(pending), int(rstrip), piece,
                                               len(piece), out, 4096, held)
                    text = pending + piece.decode("ascii")
                    sent = text.rstrip() if rstrip else text
                    body = head + encode_basestring(sent).encode() + tail
                    if number >= 0:
                        body += b"%d" % number + number_tail
                    assert ffi.unpack(out, n) == (b"%x\r\n%b\r\n" % (len(body), body) if sent else b""), \
                        (piece, rstrip, number)
                    assert held[0] == len(text) - len(sent), (piece, rstrip, pending)
    assert lib().bf_stream_format(head, len(head), tail, len(tail), -1, b"", 0, b"", 0, 0, b"abc", 3, out, 10,
                                  held) == -1
