"""Speculative decoding on the real model: n-gram drafts verified in the batch.

    an edit-like prompt (the answer repeats most of the input) -> greedy, with and without drafts
    -> the same tokens, or a first difference at a near-tie of the run without drafts

Why a near-tie is allowed: llama.cpp's CPU kernels round differently for different batch shapes
(a step that verifies 5 tokens of one sequence is not 5 one-token steps: matrix products over
several rows take other paths than over one), so logits differ in the last bits, up to ~0.2 on
this Q4_1 model. A sequence verified with drafts sees the shapes of its drafts; where two tokens
are that close, greedy may pick the other one, with or without speculation (llama-server's
drafts have the same property). A bug (wrong positions, cells or output rows) diverges at a
clear winner. Everything else (stops, max_tokens, usage, the cells left behind) is exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from botframework.engine import Engine
from botframework.engine.detokenizer import IncrementalDetokenizer
from botframework.native import Context, ContextParams, Model, SamplerSpec
from botframework.scheduler.output import Delta, FinishReason, RequestHandle
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig
from botframework.scheduler.sequence import Request, Sequence
from botframework.specs import GrammarSpec, SamplingParams

NEAR_TIE = 0.5  # top-2 logit gap under which batch-shape rounding may flip a greedy choice
GREEDY = SamplerSpec(temperature=0.0)

SOURCE = '''def load_config(path):
    with open(path) as f:
        data = f.read()
    config = {}
    for line in data.splitlines():
        key, value = line.split("=", 1)
        config[key.strip()] = value.strip()
    return config


def save_config(path, config):
    with open(path, "w") as f:
        for key, value in config.items():
            f.write(f"{key} = {value}\\n")
'''
EDIT = f"<|im_start|>user\nAdd type hints to this code:\n```python\n{SOURCE}```<|im_end|>\n<|im_start|>assistant\n"
OTHER = "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n"


class Outcome:
    def __init__(self, seq: Sequence) -> None:
        deltas: list[Delta] = list(seq.handle)
        self.tokens = [t for d in deltas for t in d.token_ids]
        self.text = "".join(d.text for d in deltas)
        self.finish = deltas[-1].finish_reason
        usage = deltas[-1].usage
        assert usage is not None
        self.usage = usage
        self.gaps = [top[0][1] - top[1][1] for d in deltas for (_t, _lp, top) in d.logprobs]


@pytest.fixture(scope="module")
def context(model: Model) -> Iterator[Context]:
    ctx = Context(model, ContextParams(n_ctx=2048, n_batch=512, n_ubatch=512, n_seq_max=4, n_threads=1,
                                       n_threads_batch=1))
    yield ctx
    ctx.close()


def add_requests(s: Scheduler, model: Model, requests: list[tuple[str, SamplingParams, bool | None]]
                 ) -> list[Sequence]:
    """Queue (prompt text, params, speculative) as requests r0, r1, ...; their sequences."""
    seqs = []
    for i, (text, params, wants) in enumerate(requests):
        tokens = model.tokenize(text, add_special=False, parse_special=True)
        request = Request(f"r{i}", tuple(tokens), params, speculative=wants)
        seq = Sequence(request, RequestHandle(request.request_id, lambda _id: None),
                       IncrementalDetokenizer(model.token_to_piece, model.piece_text))
        s.add(seq)
        seqs.append(seq)
    return seqs


def generate(model: Model, context: Context, requests: list[tuple[str, SamplingParams, bool | None]],
             speculative: str) -> tuple[list[Outcome], Scheduler]:
    """Run the requests together to the end on a fresh cache; each one's outcome."""
    context.memory.clear()
    engine = Engine(model, context)
    # drafts whether or not they pay on one thread here (they do not: a 2-token step costs ~2.6
    # of a 1-token one): these tests are about what verification keeps
    s = Scheduler(SchedulerConfig(num_slots=4, num_ctx=context.n_ctx, speculative=speculative, prefix_cache_bytes=0,
                                  draft_by_cost=False), eog_tokens=model.eog_tokens)
    seqs = add_requests(s, model, requests)
    try:
        while s.has_work:
            plan = s.schedule()
            s.update(plan, engine.execute(plan))
        for slot in s.slots:  # the scheduler's view of the cache is llama.cpp's
            assert context.memory.pos_max(slot.seq_id) == len(slot.cached) - 1
    finally:
        engine.close()
    return [Outcome(seq) for seq in seqs], s


def assert_same_greedy(plain: Outcome, drafted: Outcome) -> None:
    """The same tokens, or a first difference where the run without drafts had a near-tie."""
    if plain.tokens == drafted.tokens:
        assert plain.text == drafted.text and plain.usage.completion_tokens == drafted.usage.completion_tokens
        return
    k = next((i for i, (a, b) in enumerate(zip(plain.tokens, drafted.tokens, strict=False)) if a != b),
             min(len(plain.tokens), len(drafted.tokens)))
    assert k < len(plain.gaps) and plain.gaps[k] < NEAR_TIE, \
        f"diverged at token {k} where the choice was clear (gap {plain.gaps[k] if k < len(plain.gaps) else None})"


def params(max_tokens: int = 200, **kw: object) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, num_logprobs=2, sampler=kw.pop("sampler", GREEDY),  # type: ignore[arg-type]
                          **kw)  # type: ignore[arg-type]


def test_greedy_with_drafts_equals_without(model: Model, context: Context) -> None:
    [plain], _ = generate(model, context, [(EDIT, params(), None)], "none")
    [drafted], s = generate(model, context, [(EDIT, params(), None)], "ngram")
    assert_same_greedy(plain, drafted)
    assert s.num_accepted_draft_tokens > 20  # the answer copies the code: drafts were accepted
    assert drafted.usage.accepted_draft_tokens > 0 and drafted.usage.draft_tokens >= drafted.usage.accepted_draft_tokens
    assert plain.usage.draft_tokens == 0


def test_batched_with_sequences_that_do_not_draft(model: Model, context: Context) -> None:
    requests = [(EDIT, params(150), None), (OTHER, params(60), False), (EDIT, params(120), None),
                (OTHER, params(80), False)]
    plain, _ = generate(model, context, requests, "none")
    drafted, s = generate(model, context, requests, "ngram")
    for a, b in zip(plain, drafted, strict=True):
        assert_same_greedy(a, b)
    assert s.num_accepted_draft_tokens > 0
    assert drafted[1].usage.draft_tokens == drafted[3].usage.draft_tokens == 0


def test_stops_and_max_tokens_inside_drafts(model: Model, context: Context) -> None:
    [plain], _ = generate(model, context, [(EDIT, params(120), None)], "none")
    [drafted], _ = generate(model, context, [(EDIT, params(120), None)], "ngram")
    same = next((i for i, (a, b) in enumerate(zip(plain.tokens, drafted.tokens, strict=False)) if a != b),
                len(plain.tokens))
    text = model.detokenize(plain.tokens[:same])
    assert len(text) > 60
    for stop in ("config = {}", "key.strip()", "return config", "(path"):
        if stop not in text[: len(text) - 20]:
            continue
        a, _ = generate(model, context, [(EDIT, params(120, stop=(stop,)), None)], "none")
        b, _ = generate(model, context, [(EDIT, params(120, stop=(stop,)), None)], "ngram")
        assert (b[0].text, b[0].finish, b[0].usage.completion_tokens) == \
            (a[0].text, a[0].finish, a[0].usage.completion_tokens)
        assert b[0].finish is FinishReason.STOP
    for max_tokens in (1, 7, 30, 41):
        if max_tokens > same:
            continue
        a, _ = generate(model, context, [(EDIT, params(max_tokens), None)], "none")
        b, _ = generate(model, context, [(EDIT, params(max_tokens), None)], "ngram")
        assert (b[0].tokens, b[0].finish, b[0].usage.completion_tokens) == \
            (a[0].tokens, FinishReason.LENGTH, max_tokens)


def test_grammar_constrained_drafts_follow_the_grammar(model: Model, context: Context) -> None:
    """Each draft position is sampled through the grammar: only tokens it accepts are kept."""
    gbnf = 'root ::= "def " [a-z_]+ "(" [a-z, ]* "):" ( "\\n    " [a-z_ =().,"]+ )+'
    spec = SamplerSpec(temperature=0.0, grammar=GrammarSpec(gbnf))
    [plain], _ = generate(model, context, [(EDIT, params(80, sampler=spec), None)], "none")
    [drafted], _ = generate(model, context, [(EDIT, params(80, sampler=spec), None)], "ngram")
    assert_same_greedy(plain, drafted)
    assert drafted.text.startswith("def ")


def test_sampled_requests_draft_too(model: Model, context: Context) -> None:
    sampler = SamplerSpec(temperature=0.7, seed=5)
    [out], s = generate(model, context, [(EDIT, params(150, sampler=sampler), True)], "none")
    assert out.usage.completion_tokens == len(out.tokens) and out.finish is not None
    assert s.num_draft_tokens > 0
