"""The per-token sampling path (bf_sample in native/bf_shim.cpp) against llama.cpp's own.

    SamplerChain(spec).sample(ctx, i)   ==   llama_sampler_sample(one chain built the same way, ctx, i)

for greedy, seeded sampling, penalties and logit_bias, token after token (both chains accept
every token, so penalty history and the dist sampler's random state stay in step). The greedy
argmax reads the context's logits buffer directly: it is written here to pin the ties, NaN
and block boundaries.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from botframework.errors import InvalidRequestError
from botframework.native import Batch, Context, ContextParams, Model, SamplerChain, SamplerSpec
from botframework.native import sampler as sampler_module
from botframework.native._lib import ffi, lib
from botframework.specs import GrammarSpec


@pytest.fixture(scope="module")
def context(model: Model) -> Iterator[Context]:
    with Context(model, ContextParams(n_ctx=512, n_batch=64, n_threads=2, n_threads_batch=2)) as ctx:
        yield ctx


def reference_chain(model: Model, spec: SamplerSpec, post: bool = True) -> Any:
    """The same samplers in one llama.cpp chain, in the order SamplerChain uses (pre, then post;
    only pre when `post` is False)."""
    L = lib()
    params = L.llama_sampler_chain_default_params()
    chain = L.llama_sampler_chain_init(params)
    if spec.logit_bias:
        arr = ffi.new("llama_logit_bias[]", len(spec.logit_bias))
        for i, (token, bias) in enumerate(spec.logit_bias.items()):
            arr[i].token, arr[i].bias = token, bias
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_logit_bias(model.n_vocab, len(spec.logit_bias), arr))
    if spec.repeat_penalty != 1.0 or spec.presence_penalty or spec.frequency_penalty:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(
            model.n_vocab, spec.repeat_last_n, spec.repeat_penalty, spec.frequency_penalty, spec.presence_penalty))
    if not post:
        return chain
    if spec.greedy:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        return chain
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(spec.top_k))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(spec.top_p, 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(spec.min_p, 1))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(spec.temperature))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(spec.seed))
    return chain


SPECS = {
    "greedy": SamplerSpec(temperature=0.0),
    "greedy_logit_bias": SamplerSpec(temperature=0.0, logit_bias={11: 5.0, 198: -100.0, 30: 2.5}),
    "greedy_penalties": SamplerSpec(temperature=0.0, repeat_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.4),
    "seeded": SamplerSpec(temperature=0.9, top_k=40, top_p=0.9, min_p=0.02, seed=1234),
    "seeded_penalties_bias": SamplerSpec(temperature=1.2, top_k=100, top_p=0.95, min_p=0.0, seed=7,
                                         repeat_penalty=1.1, frequency_penalty=0.3, logit_bias={13: 3.0}),
}


def sample_alongside(model: Model, context: Context, spec: SamplerSpec, reference: Any, steps: int = 40) -> int:
    """Decode `steps` tokens, each sampled by SamplerChain(spec) and, from the same logits, by
    llama_sampler_sample(reference) (which accepts too): they must agree every time. Frees
    `reference`; returns how many steps the grammar's constrained path decided."""
    L = lib()
    try:
        context.memory.clear()
        tokens = model.tokenize("The quick brown fox said that the weather", add_special=True)
        batch = Batch(64)
        index = batch.add_sequence(tokens, 0, 0, logits_last=True)
        context.decode(batch)
        with SamplerChain(model, spec) as sampler:
            pos = len(tokens)
            for _ in range(steps):
                expected = L.llama_sampler_sample(reference, context.handle, index)
                token = sampler.sample(context, index)
                assert token == expected
                batch.clear()
                index = batch.add(token, pos, 0, want_logits=True)
                pos += 1
                context.decode(batch)
            return sampler.num_grammar_kept + sampler.num_grammar_short + sampler.num_grammar_full
    finally:
        L.llama_sampler_free(reference)


@pytest.mark.parametrize("name", SPECS)
def test_sample_matches_llama_sampler_sample(name: str, model: Model, context: Context) -> None:
    sample_alongside(model, context, SPECS[name], reference_chain(model, SPECS[name]))


DIGITS = GrammarSpec(gbnf='root ::= [0-9]+ ("," " "? [0-9]+)*')


@pytest.mark.parametrize("name", [name for name, spec in SPECS.items() if spec.greedy])
def test_grammar_path_matches_llama_sampler_sample(name: str, model: Model, context: Context) -> None:
    """With a grammar the candidates are filled in C (bf_fill_candidates) and the grammar is
    applied in steps; greedy, the token must be llama.cpp's: pre, grammar, greedy in one chain.
    The prompt wants words, the grammar digits: the constrained steps run, not only the fast one."""
    L = lib()
    reference = reference_chain(model, SPECS[name], post=False)
    L.llama_sampler_chain_add(reference, L.llama_sampler_init_grammar(model.vocab, DIGITS.gbnf.encode(), b"root"))
    L.llama_sampler_chain_add(reference, L.llama_sampler_init_greedy())
    constrained = sample_alongside(model, context, dataclasses.replace(SPECS[name], grammar=DIGITS), reference)
    assert constrained > 0


def greedy_on(model: Model, context: Context, values: np.ndarray) -> int:
    """Greedy sample after writing `values` over output 0's logits (the buffer is the context's)."""
    context.memory.clear()
    batch = Batch(1)
    batch.add(model.tokenize("Hi")[0], 0, 0, want_logits=True)
    context.decode(batch)
    logits = np.frombuffer(ffi.buffer(lib().llama_get_logits_ith(context.handle, 0), model.n_vocab * 4),
                           dtype=np.float32)
    logits[:] = values
    with SamplerChain(model, SamplerSpec(temperature=0.0)) as sampler:
        return sampler.sample(context, 0)


def test_greedy_argmax_takes_the_first_of_equal_maxima(model: Model, context: Context) -> None:
    n = model.n_vocab
    rng = np.random.default_rng(0)
    values = rng.normal(size=n).astype(np.float32)
    for winners in ([0], [n - 1], [1023, 1024], [2047, 5000, n - 1], [n // 2, n // 2 + 1]):
        v = values.copy()
        v[winners] = 9.0
        assert greedy_on(model, context, v) == winners[0]
    v = np.full(n, -math.inf, dtype=np.float32)
    v[4097] = -1e30
    assert greedy_on(model, context, v) == 4097
    v = values.copy()
    v[::7] = np.nan  # NaN never wins; the largest number does
    v[3001] = 50.0
    assert greedy_on(model, context, v) == 3001
    for _ in range(20):
        v = rng.normal(size=n).astype(np.float32)
        assert greedy_on(model, context, v) == int(np.argmax(v))


def test_a_missing_output_is_an_error_not_a_crash(model: Model, context: Context) -> None:
    with SamplerChain(model, SamplerSpec(temperature=0.5, seed=1)) as sampler, \
            pytest.raises(InvalidRequestError, match="no logits"):
        sampler.sample(context, 10_000)


def test_samplers_of_one_thread_share_a_candidate_buffer_and_still_agree(model: Model, context: Context) -> None:
    """A request no longer allocates its own 49,152 candidates: the samplers of a thread share one
    buffer (another thread has its own). Two non-greedy samplers, one with a pre chain, sampling
    in turn from the same outputs must each still match llama.cpp's chain built like it."""
    a = sampler_module.scratch_candidates(model.n_vocab)
    assert sampler_module.scratch_candidates(model.n_vocab)[0] is a[0]
    other: list[Any] = []
    thread = threading.Thread(target=lambda: other.append(sampler_module.scratch_candidates(model.n_vocab)))
    thread.start()
    thread.join()
    assert other[0][0] is not a[0]

    L = lib()
    specs = [SPECS["seeded"], SPECS["seeded_penalties_bias"]]
    references = [reference_chain(model, spec) for spec in specs]
    context.memory.clear()
    tokens = model.tokenize("Once upon a time, in a small village", add_special=True)
    batch = Batch(64)
    index = batch.add_sequence(tokens, 0, 0, logits_last=True)
    context.decode(batch)
    try:
        with SamplerChain(model, specs[0]) as first, SamplerChain(model, specs[1]) as second:
            pos = len(tokens)
            for _ in range(30):
                chosen = []
                for sampler, reference in zip((first, second), references, strict=True):
                    expected = L.llama_sampler_sample(reference, context.handle, index)
                    chosen.append(sampler.sample(context, index))
                    assert chosen[-1] == expected
                batch.clear()
                index = batch.add(chosen[0], pos, 0, want_logits=True)
                pos += 1
                context.decode(batch)
    finally:
        for reference in references:
            L.llama_sampler_free(reference)
