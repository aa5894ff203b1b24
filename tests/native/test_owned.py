"""NativeHandle (botframework.native._owned) through the real wrappers: misuse of an owner is a
typed error, never a crash.

    close(), close() again        -> nothing happens twice
    use after close()             -> ClosedError
    with X(...) as x              -> x is X; closed on exit, also on an exception
    X(...) raising half-way       -> __del__ / close() find nothing to free, say nothing
    Model.close()                 -> closes the contexts and grammar samplers pointing into it
    batch over capacity, bad seq  -> InvalidRequestError; the context keeps working
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from botframework.errors import BotframeworkError, ClosedError, InvalidRequestError
from botframework.native import Batch, Context, ContextParams, Model, SamplerChain, SamplerSpec
from botframework.native._lib import ffi
from botframework.native._owned import NativeHandle
from botframework.native.shim import ChatParser, ChatTemplates
from botframework.specs import GrammarSpec

N_CTX = 256
NUM_SEQS = 2
DIGITS = GrammarSpec(gbnf="root ::= [0-9]+")
MESSAGES = {"messages": [{"role": "user", "content": "Hi"}]}


def context_params(n_seq_max: int = NUM_SEQS) -> ContextParams:
    return ContextParams(n_ctx=N_CTX, n_batch=64, n_ubatch=64, n_seq_max=n_seq_max, n_threads=2,
                         n_threads_batch=2)


@pytest.fixture(scope="module")
def context(model: Model) -> Iterator[Context]:
    with Context(model, context_params()) as ctx:
        yield ctx


@pytest.fixture()
def own_model(model_path: Path) -> Iterator[Model]:
    """A model of this test's own, to close (the module's `model` stays open)."""
    with Model(model_path) as loaded:
        yield loaded


def decode_prompt(model: Model, ctx: Context, seq_id: int = 0) -> int:
    """Decode a short prompt into seq_id from position 0; the batch index of its logits."""
    tokens = model.tokenize("Misuse is a typed error.", add_special=True)
    ctx.memory.seq_rm(seq_id)
    with Batch(len(tokens)) as batch:
        last = batch.add_sequence(tokens, 0, seq_id, logits_last=True)
        ctx.decode(batch)
    return last


def assert_usable(model: Model, ctx: Context) -> None:
    last = decode_prompt(model, ctx)
    logits = ctx.logits_ith(last)
    assert logits.shape == (model.n_vocab,) and logits.max() > logits.min()


def unraisable_during(action: Callable[[], object]) -> list[str]:
    """Run `action` (expected to raise a BotframeworkError), drop it, collect: what did __del__ say?"""
    seen: list[str] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda info: seen.append(f"{info.exc_type.__name__}: {info.exc_value}")
    try:
        with pytest.raises(BotframeworkError):
            action()
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    return seen


# --- the base class on its own ------------------------------------------------------------------

class _Owner(NativeHandle):
    """Two cffi allocations (free function None: dropped, not freed) and a hook to count closes."""

    _what = "test owner"
    _frees = (("_handle", None), ("_second", None))

    def __init__(self, fail: bool = False) -> None:
        self.num_on_close = 0
        self._handle: Any = ffi.new("int *")
        if fail:
            raise InvalidRequestError("failed half-way")
        self._second: Any = ffi.new("int *")

    def _on_close(self) -> None:
        self.num_on_close = getattr(self, "num_on_close", 0) + 1


def test_base_close_is_idempotent_and_drops_every_pointer() -> None:
    owner = _Owner()
    assert not owner.closed and owner.handle is not None
    owner.close()
    owner.close()
    assert owner.closed and owner._second is None  # the class default shows through
    assert owner.num_on_close == 2  # the hook runs each time: it must be idempotent
    with pytest.raises(ClosedError, match="test owner is closed"):
        _ = owner.handle
    with pytest.raises(ClosedError, match="test owner is closed"):
        owner.check_open()


def test_base_gives_every_owned_attribute_a_class_default() -> None:
    assert vars(_Owner)["_second"] is None  # named only in _frees: __init_subclass__ added it
    assert unraisable_during(lambda: _Owner(fail=True)) == []


def test_base_context_manager_closes_on_an_exception() -> None:
    with pytest.raises(RuntimeError), _Owner() as owner:
        assert isinstance(owner, _Owner) and not owner.closed
        raise RuntimeError("inside the block")
    assert owner.closed


def test_base_close_from_many_threads_frees_once(monkeypatch: pytest.MonkeyPatch) -> None:
    freed: list[Any] = []

    class Counted(NativeHandle):
        _frees = (("_handle", "counted_free"),)

    class FakeLib:
        def counted_free(self, pointer: Any) -> None:
            freed.append(pointer)

    owners = [Counted() for _ in range(2000)]
    for owner in owners:
        owner._handle = object()
    barrier = threading.Barrier(4)

    def close_all() -> None:
        barrier.wait()
        for owner in owners:
            owner.close()

    gc.collect()  # no real wrapper may be finalised while lib() is the fake
    gc.disable()
    monkeypatch.setattr("botframework.native._owned.lib", FakeLib)
    try:
        threads = [threading.Thread(target=close_all) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        monkeypatch.undo()
        gc.enable()
    assert len(freed) == len(owners) == len({id(p) for p in freed})


# --- double close, context managers ------------------------------------------------------------

def test_every_wrapper_closes_twice_and_works_as_a_context_manager(own_model: Model) -> None:
    templates = ChatTemplates(own_model)
    params = templates.apply(MESSAGES)
    makers: list[Callable[[], NativeHandle]] = [
        lambda: Context(own_model, context_params()),
        lambda: Batch(4),
        lambda: SamplerChain(own_model, SamplerSpec(temperature=0.0)),
        lambda: SamplerChain(own_model, SamplerSpec(temperature=0.0, grammar=DIGITS)),
        lambda: ChatTemplates(own_model),
        lambda: ChatParser(params),
    ]
    for make in makers:
        obj = make()
        obj.close()
        obj.close()
        assert obj.closed
        with make() as entered:
            assert not entered.closed
        assert entered.closed
    templates.close()
    own_model.close()
    own_model.close()
    assert own_model.closed


# --- close, then use ---------------------------------------------------------------------------

def test_a_closed_model_raises(own_model: Model) -> None:
    own_model.close()
    for use in (lambda: own_model.tokenize("x"), own_model.description, own_model.metadata,
                own_model.chat_template, lambda: own_model.detokenize([1]),
                lambda: own_model.token_to_piece(1, special=True), lambda: own_model.vocab,
                lambda: Context(own_model, context_params()),
                lambda: SamplerChain(own_model, SamplerSpec(temperature=0.0)),
                lambda: ChatTemplates(own_model)):
        with pytest.raises(ClosedError):
            use()
    assert own_model.n_vocab > 0 and own_model.eog_tokens  # copied out at load: still there


def test_a_closed_context_raises(model: Model) -> None:
    ctx = Context(model, context_params())
    index = decode_prompt(model, ctx)
    sampler = SamplerChain(model, SamplerSpec(temperature=0.0))
    ctx.close()
    memory = ctx.memory
    with Batch(1) as batch:
        batch.add(1, 0, 0, want_logits=True)
        for use in (lambda: ctx.decode(batch), lambda: ctx.decode(Batch(1)), lambda: ctx.logits_ith(index),
                    lambda: ctx.embeddings_ith(index), lambda: ctx.causal_attn, lambda: ctx.state_seq_get(0),
                    lambda: ctx.state_seq_set(0, b"x"), lambda: ctx.set_threads(1, 1),
                    lambda: ctx.set_embeddings(False), memory.clear, lambda: memory.seq_rm(0),
                    lambda: memory.seq_cp(0, 1), lambda: memory.seq_keep(0), lambda: memory.seq_add(0, 0, -1, 1),
                    lambda: memory.pos_min(0), lambda: memory.pos_max(0), memory.can_shift,
                    lambda: sampler.sample(ctx, index)):
            with pytest.raises(ClosedError):
                use()
    sampler.close()


def test_a_closed_batch_raises(model: Model, context: Context) -> None:
    batch = Batch(8)
    batch.add_sequence([1, 2, 3], 0, 0, logits_last=True)
    batch.close()
    assert batch.num_free == 0
    for use in (lambda: batch.add(1, 0, 0, want_logits=True), lambda: batch.add_sequence([1], 0, 0, True),
                lambda: batch.add_sequence([1, 2], 0, 0, True), batch.native):
        with pytest.raises(ClosedError):
            use()
    context.decode(batch)  # closed means empty: nothing to decode, as after clear()
    assert_usable(model, context)


@pytest.mark.parametrize("grammar", [None, DIGITS], ids=["plain", "grammar"])
def test_a_closed_sampler_raises(model: Model, context: Context, grammar: GrammarSpec | None) -> None:
    index = decode_prompt(model, context)
    sampler = SamplerChain(model, SamplerSpec(temperature=0.0, grammar=grammar))
    sampler.close()
    # accept and reset handed the freed chains (None) to cffi before: a TypeError, not ClosedError
    for use in (lambda: sampler.sample(context, index), lambda: sampler.accept(5), sampler.reset):
        with pytest.raises(ClosedError):
            use()
    assert not sampler.has_grammar


def test_closed_chat_templates_and_parser_raise(model: Model) -> None:
    templates = ChatTemplates(model)
    parser = ChatParser(templates.apply(MESSAGES))
    templates.close()
    parser.close()
    with pytest.raises(ClosedError):
        templates.apply(MESSAGES)
    with pytest.raises(ClosedError):
        parser.parse("Hello")


# --- ownership chains --------------------------------------------------------------------------

def test_closing_a_model_closes_what_points_into_it(own_model: Model) -> None:
    """Closing the model first used to leave its contexts and grammars on freed memory."""
    ctx = Context(own_model, context_params())
    index = decode_prompt(own_model, ctx)
    grammar = SamplerChain(own_model, SamplerSpec(temperature=0.0, grammar=DIGITS))
    plain = SamplerChain(own_model, SamplerSpec(temperature=0.0))
    templates = ChatTemplates(own_model)
    own_model.close()
    assert ctx.closed and grammar.closed
    assert not plain.closed and not templates.closed  # nothing of theirs points into the model
    for use in (lambda: ctx.decode(Batch(1)), lambda: grammar.accept(5), lambda: plain.sample(ctx, index)):
        with pytest.raises(ClosedError):
            use()
    assert "user" in templates.apply(MESSAGES)["prompt"]  # the templates copied what they need
    plain.close()
    templates.close()


def test_a_context_keeps_its_model_and_a_memory_view_its_context(model_path: Path) -> None:
    gc.disable()  # freed by reference counting alone: no cycle for the collector to break
    try:
        model = Model(model_path)
        model_ref = weakref.ref(model)
        ctx = Context(model, context_params())
        del model
        assert model_ref() is not None  # the context keeps it
        memory = ctx.memory
        context_ref = weakref.ref(ctx)
        del ctx
        assert context_ref() is not None  # the view keeps it
        memory.clear()
        del memory
        assert context_ref() is None and model_ref() is None
    finally:
        gc.enable()


# --- __del__ after a failed __init__ -----------------------------------------------------------

def test_failed_constructors_leave_nothing_for_del(tmp_path: Path, model: Model) -> None:
    not_gguf = tmp_path / "not-a-model.gguf"
    not_gguf.write_bytes(os.urandom(4096))
    bad_magic = tmp_path / "magic.gguf"
    bad_magic.write_bytes(b"GGUF" + os.urandom(4096))
    seen: list[str] = []
    for action in (lambda: Model(not_gguf), lambda: Model(bad_magic), lambda: Model(tmp_path / "missing.gguf"),
                   lambda: Context(model, ContextParams(n_seq_max=100_000)),
                   lambda: SamplerChain(model, SamplerSpec(logit_bias={model.n_vocab: 1.0})),  # chains built
                   lambda: SamplerChain(model, SamplerSpec(grammar=GrammarSpec(gbnf="root ::= ("))),
                   lambda: ChatTemplates(None, template_override="{% for x in %}"),
                   lambda: ChatTemplates(None)):
        seen += unraisable_during(action)
    assert seen == []


# --- capacity and sequence ids -----------------------------------------------------------------

def test_batch_over_capacity(model: Model, context: Context) -> None:
    batch = Batch(4)
    batch.add_sequence([1, 2, 3], 0, 0, logits_last=False)
    with pytest.raises(InvalidRequestError, match="capacity of 4"):
        batch.add_sequence([4, 5], 3, 0, logits_last=True)
    batch.add(4, 3, 0, want_logits=True)
    assert batch.num_free == 0
    with pytest.raises(InvalidRequestError):
        batch.add(5, 4, 0, want_logits=True)
    with pytest.raises(InvalidRequestError):
        Batch(2).add_sequence([1, 2, 3], 0, 0, logits_last=True)
    assert batch.n_tokens == 4  # the refused adds wrote nothing
    batch.clear()
    assert batch.num_free == 4
    assert_usable(model, context)


@pytest.mark.parametrize("seq_id", [NUM_SEQS, NUM_SEQS + 5, 255, -1], ids=["n_seq_max", "above", "255", "-1"])
def test_sequence_id_out_of_range_in_a_batch(model: Model, context: Context, seq_id: int) -> None:
    context.memory.clear()
    batch = Batch(4)
    batch.add(5, 0, 0, want_logits=False)
    batch.add(6, 0, seq_id, want_logits=True)
    with pytest.raises(InvalidRequestError, match=f"sequence id {seq_id} of batch token 1"):
        context.decode(batch)
    assert context.memory.pos_max(0) == -1  # refused before anything was stored
    assert_usable(model, context)


def test_a_batch_token_in_two_sequences_one_out_of_range(model: Model, context: Context) -> None:
    context.memory.clear()
    batch = Batch(3, num_seq_per_token=2)
    batch.add(5, 0, [0, 1], want_logits=False)
    batch.add(6, 1, [1, NUM_SEQS], want_logits=True)
    with pytest.raises(InvalidRequestError, match=f"sequence id {NUM_SEQS} of batch token 1"):
        context.decode(batch)
    with pytest.raises(InvalidRequestError):
        batch.add(7, 2, [0, 1, 1], want_logits=True)  # more sequences than the batch has room for
    assert_usable(model, context)


@pytest.mark.parametrize("seq_id", [NUM_SEQS, 255, 256, -2], ids=["n_seq_max", "255", "256", "-2"])
def test_sequence_id_out_of_range_in_kv_and_state_operations(model: Model, context: Context, seq_id: int) -> None:
    """llama.cpp aborts the process on 256 and -2 (GGML_ASSERT) and takes the others silently."""
    memory = context.memory
    for use in (lambda: memory.seq_rm(seq_id), lambda: memory.seq_cp(0, seq_id), lambda: memory.seq_cp(seq_id, 0),
                lambda: memory.seq_keep(seq_id), lambda: memory.seq_add(seq_id, 0, -1, 1),
                lambda: memory.pos_min(seq_id), lambda: memory.pos_max(seq_id),
                lambda: context.state_seq_get(seq_id), lambda: context.state_seq_set(seq_id, b"x"),
                lambda: context.embeddings_seq(seq_id)):
        with pytest.raises(InvalidRequestError, match="out of range"):
            use()
    assert memory.seq_rm(-1)  # -1 is "every sequence" for seq_rm
    assert_usable(model, context)
