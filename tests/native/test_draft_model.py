"""Speculative decoding with a draft model on the real model: SmolLM2-135M drafting for itself.

    target Context + a second Context of the draft model (DraftModel: one KV sequence per slot)
    -> greedy with drafts == without (up to batch-shape rounding at near-ties: see
       test_speculative_model.py), nearly every draft accepted (the draft is the target)
    -> both caches match the scheduler's and the draft model's bookkeeping after every step,
       a cancellation between a step's execute and its update included
    -> a draft model with another vocabulary (the all-MiniLM-L6-v2 embedding model) is refused
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_speculative_model import EDIT, OTHER, Outcome, add_requests, assert_same_greedy, params

from botframework.config import WorkerConfig
from botframework.engine import Engine
from botframework.engine.draft_model import DraftModel
from botframework.errors import ModelLoadError
from botframework.native import Context, ContextParams, Model
from botframework.runtime.worker import ModelWorker, check_same_vocab
from botframework.scheduler.output import FinishReason
from botframework.scheduler.scheduler import Scheduler, SchedulerConfig
from botframework.scheduler.sequence import Request
from botframework.specs import SamplingParams

N_CTX = 2048
EMBEDDING_MODEL = Path.home() / ".cache" / "botframework" / "models" / "all-MiniLM-L6-v2.gguf"


@pytest.fixture(scope="module")
def context(model: Model) -> Iterator[Context]:
    ctx = Context(model, ContextParams(n_ctx=N_CTX, n_batch=512, n_ubatch=512, n_seq_max=4, n_threads=1,
                                       n_threads_batch=1))
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def drafts(model: Model) -> Iterator[DraftModel]:
    ctx = Context(model, ContextParams(n_ctx=N_CTX, n_batch=512, n_ubatch=512, n_seq_max=4, n_threads=1,
                                       n_threads_batch=1))
    source = DraftModel(ctx)
    yield source
    source.close()
    ctx.close()


def check_caches(s: Scheduler, context: Context, drafts: DraftModel | None) -> None:
    """After a step's execute (rejected drafts leave the target's cache with the next plan)."""
    for slot in s.slots:  # the scheduler's view of the target's cache is llama.cpp's
        assert context.memory.pos_max(slot.seq_id) == len(slot.cached) - 1
    if drafts is not None:  # and the draft model's view of its own
        memory = drafts.context.memory
        for seq_id in range(drafts.context.n_seq_max):
            assert memory.pos_max(seq_id) == len(drafts.cached.get(seq_id, [])) - 1


def generate(model: Model, context: Context, drafts: DraftModel | None,
             requests: list[tuple[str, SamplingParams, bool | None]],
             cancel_at: tuple[int, int] | None = None) -> tuple[list[Outcome], Scheduler]:
    """Run the requests together to the end on fresh caches; cancel_at = (step, request index):
    cancel that request after the step's execute, before its update."""
    context.memory.clear()
    if drafts is not None:
        drafts.reset()
    engine = Engine(model, context)
    s = Scheduler(SchedulerConfig(num_slots=4, num_ctx=N_CTX, speculative="model" if drafts else "none",
                                  prefix_cache_bytes=0, draft_by_cost=False),  # verification, paying or not
                  eog_tokens=model.eog_tokens, draft_source=drafts)
    seqs = add_requests(s, model, requests)
    try:
        step = 0
        while s.has_work:
            plan = s.schedule()
            result = engine.execute(plan)
            check_caches(s, context, drafts)
            if cancel_at is not None and step == cancel_at[0]:
                assert any(item.num_draft for item in plan.items if item.request_id == f"r{cancel_at[1]}")
                s.cancel(f"r{cancel_at[1]}")
            s.update(plan, result)
            step += 1
    finally:
        engine.close()
    return [Outcome(seq) for seq in seqs], s


def test_greedy_with_a_draft_model_equals_without(model: Model, context: Context, drafts: DraftModel) -> None:
    [plain], _ = generate(model, context, None, [(EDIT, params(), None)])
    [drafted], s = generate(model, context, drafts, [(EDIT, params(), None)])
    assert_same_greedy(plain, drafted)
    usage = drafted.usage
    assert usage.draft_tokens > 40 and usage.accepted_draft_tokens >= 0.8 * usage.draft_tokens  # it drafts for itself
    assert (usage.prompt_tokens, usage.completion_tokens) == (plain.usage.prompt_tokens, plain.usage.completion_tokens)
    assert s.num_accepted_draft_tokens == usage.accepted_draft_tokens


def test_batched_beside_sequences_that_do_not_draft(model: Model, context: Context, drafts: DraftModel) -> None:
    requests = [(EDIT, params(120), None), (OTHER, params(60), False), (OTHER, params(80), None)]
    plain, _ = generate(model, context, None, requests)
    decodes = drafts.num_decodes
    drafted, s = generate(model, context, drafts, requests)
    for a, b in zip(plain, drafted, strict=True):
        assert_same_greedy(a, b)
    assert drafts.num_decodes - decodes < s.num_draft_tokens  # both sequences' drafts in the same decodes
    assert drafted[1].usage.draft_tokens == 0
    assert drafted[0].usage.accepted_draft_tokens > 0 and drafted[2].usage.accepted_draft_tokens > 0


def test_cancel_between_execute_and_update(model: Model, context: Context, drafts: DraftModel) -> None:
    """Cancelled with drafts in flight: both caches stay in step (checked after every step),
    the other request's output is unchanged, and the next request reuses the slot cleanly."""
    requests = [(EDIT, params(100), None), (EDIT, params(100), None)]
    plain, _ = generate(model, context, None, requests)
    drafted, _ = generate(model, context, drafts, requests, cancel_at=(6, 0))
    assert drafted[0].finish is FinishReason.CANCELLED
    assert_same_greedy(plain[1], drafted[1])
    # the draft context still holds the cancelled sequence's cells: a new request syncs them away
    [again], _ = generate(model, context, drafts, [(OTHER, params(40), None)])
    [fresh], _ = generate(model, context, None, [(OTHER, params(40), None)])
    assert_same_greedy(fresh, again)


def test_a_draft_model_with_another_vocabulary_is_refused(model: Model, model_path: Path) -> None:
    if not EMBEDDING_MODEL.exists():
        pytest.skip("all-MiniLM-L6-v2 is not pulled (botframework pull all-minilm-l6-v2)")
    other = Model(EMBEDDING_MODEL)
    try:
        with pytest.raises(ModelLoadError, match="vocabulary"):
            check_same_vocab(model, other, "smol", EMBEDDING_MODEL)
        check_same_vocab(model, model, "smol", model_path)  # itself: fine
    finally:
        other.close()
    with pytest.raises(ModelLoadError, match=r"does not share .*vocabulary \(30522 tokens against the target's 49152"):
        ModelWorker(model_path, WorkerConfig(n_ctx=512, num_slots=1, draft_model=EMBEDDING_MODEL))
    # an embedding model has nothing to draft: a server-wide draft model is not loaded for it
    with ModelWorker(EMBEDDING_MODEL, WorkerConfig(n_ctx=512, num_slots=1, draft_model=model_path,
                                                   speculative="model")) as worker:
        assert worker.drafts is None and worker.scheduler.config.speculative == "none"
        assert len(worker.embed(["a draft model is not needed here"])[0]) == 384


def test_the_worker_drafts_with_its_draft_model(model_path: Path) -> None:
    with ModelWorker(model_path, WorkerConfig(n_ctx=1024, num_slots=2, draft_model=model_path,
                                              speculative="model", n_threads=1)) as worker:
        tokens = worker.model.tokenize(EDIT, add_special=False, parse_special=True)
        deltas = list(worker.submit(Request("w0", tuple(tokens), params(60))))
        usage = deltas[-1].usage
        assert usage is not None and usage.completion_tokens == 60 and usage.accepted_draft_tokens > 20
        assert worker.drafts is not None and worker.drafts.num_decodes > 0
        assert 0 < worker.metrics.draft_ms == pytest.approx(worker.drafts.draft_ms)
        assert worker.draft_bytes > worker.model.size_bytes  # the same weights, and a KV cache


def test_local_llm_takes_a_draft_model(model_path: Path) -> None:
    from botframework import LocalLLM

    with pytest.raises(ValueError, match="needs a draft_model"):
        LocalLLM(model_path, draft="model", pull=False)
    llm = LocalLLM(model_path, n_ctx=1024, num_slots=1, n_threads=1, pull=False, draft="model",
                   draft_model=model_path)
    try:
        messages = [{"role": "user", "content": EDIT.split("user\n", 1)[1].split("<|im_end|>")[0]}]
        drafted = llm.chat(messages, max_tokens=40, temperature=0)
        plain = llm.chat(messages, max_tokens=40, temperature=0, speculative=False)
        assert drafted.usage.accepted_draft_tokens > 0 and plain.usage.draft_tokens == 0
        assert drafted.usage.completion_tokens == plain.usage.completion_tokens
    finally:
        llm.close()
