"""Differential test against llama.cpp itself: our greedy output == llama-simple's.

    prompt ─► llama-simple -m MODEL -n 32 PROMPT   (built from our vendored tree, same flags)
                stdout = pieces(prompt tokens) + pieces(generated tokens) + "\\n"
                stderr = "...decoded N tokens..." + perf counters
    prompt ─► Model.tokenize(add_special=True, parse_special=True)      (what simple.cpp does)
           ─► Engine.execute: one prefill step, then one token per step, greedy sampler
           ─► pieces(generated tokens), stopping at an end-of-generation token (not printed)

Pieces are llama_token_to_piece(special=True) bytes on both sides, so the comparison is exact
bytes, plus the token count from llama-simple's "decoded N tokens". A failure means our
tokenization, batch filling, positions or sampling differ from upstream's reference loop.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from botframework.engine import Engine, PlanItem, StepPlan
from botframework.native import Context, ContextParams, Model, SamplerSpec

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
N_PREDICT = 32
GREEDY = SamplerSpec(temperature=0.0)

PROMPTS = [
    "The capital of France is",
    # Special tokens are parsed (parse_special=True in simple.cpp): a chat-formatted prompt.
    "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n",
    # Multi-byte UTF-8 in the prompt.
    "Once upon a time, in a small café in Zürich, there lived",
]


@pytest.fixture(scope="module")
def llama_simple() -> Path:
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    from build_llama_tools import ToolBuildError, build_tools

    try:
        return build_tools(["llama-simple"])["llama-simple"]
    except ToolBuildError as exc:
        pytest.fail(f"cannot build llama.cpp's llama-simple, the reference for this test: {exc}")


@pytest.fixture(scope="module")
def engine(model: Model) -> Iterator[Engine]:
    # Like simple.cpp: the whole prompt in one decode (n_batch >= prompt), default n_ubatch
    # and flash-attn auto. llama-simple runs 4 threads; the thread count does not change CPU
    # results at these sizes (matmul rows are split between threads, not sums; flash attention
    # only splits a sum across threads for 1 query token over >= 512 KV cells), and one thread
    # is the fastest setting on small shared VMs.
    params = ContextParams(n_ctx=512, n_batch=512, n_ubatch=512, n_seq_max=1, n_threads=1, n_threads_batch=1)
    with Context(model, params) as ctx:
        eng = Engine(model, ctx)
        yield eng
        eng.close()


def run_llama_simple(binary: Path, model_path: Path, prompt: str) -> tuple[bytes, str]:
    proc = subprocess.run([str(binary), "-m", str(model_path), "-n", str(N_PREDICT), prompt],
                          capture_output=True, timeout=300, check=False)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, f"llama-simple failed ({proc.returncode}):\n{stderr[-3000:]}"
    return proc.stdout, stderr


def our_greedy(engine: Engine, prompt_tokens: list[int], request_id: str) -> list[int]:
    """simple.cpp's loop on our engine: sample N_PREDICT tokens, stop (unprinted) at EOG."""
    engine.context.memory.clear()
    generated: list[int] = []
    tokens, pos = tuple(prompt_tokens), 0
    try:
        for _ in range(N_PREDICT):
            result = engine.execute(StepPlan(items=(PlanItem(request_id, 0, tokens, pos, True, GREEDY),)))
            pos += len(tokens)
            token = result.sampled[0].token
            if engine.model.is_eog(token):
                break
            generated.append(token)
            tokens = (token,)
    finally:
        engine.release(request_id)
    return generated


def first_difference(pieces: list[bytes], reference: bytes) -> str:
    offset = 0
    for i, piece in enumerate(pieces):
        if reference[offset:offset + len(piece)] != piece:
            return (f"first difference at generated token {i}: ours {piece!r}, "
                    f"llama-simple {reference[offset:offset + max(len(piece), 8)]!r}")
        offset += len(piece)
    return f"ours ends after {len(pieces)} tokens; llama-simple continues with {reference[offset:offset + 40]!r}"


@pytest.mark.parametrize("prompt", PROMPTS, ids=["plain", "chat-special-tokens", "utf8"])
def test_greedy_matches_llama_simple(prompt: str, model: Model, model_path: Path, engine: Engine,
                                     llama_simple: Path) -> None:
    stdout, stderr = run_llama_simple(llama_simple, model_path, prompt)

    prompt_tokens = model.tokenize(prompt, add_special=True, parse_special=True)
    prompt_echo = b"".join(model.token_to_piece(t, special=True) for t in prompt_tokens)
    assert stdout.startswith(prompt_echo), (
        "llama-simple echoed a different prompt than our tokenization renders:\n"
        f"  ours:   {prompt_echo!r}\n  theirs: {stdout[:len(prompt_echo) + 20]!r}")
    assert stdout.endswith(b"\n")
    reference = stdout[len(prompt_echo):-1]

    match = re.search(r"decoded (\d+) tokens", stderr)
    assert match, f"llama-simple's stderr lacks 'decoded N tokens':\n{stderr[-2000:]}"
    num_reference_tokens = int(match.group(1))

    generated = our_greedy(engine, prompt_tokens, f"ref-{abs(hash(prompt))}")
    pieces = [model.token_to_piece(t, special=True) for t in generated]
    ours = b"".join(pieces)
    assert ours == reference, (
        f"greedy output differs from llama-simple for {prompt!r}:\n"
        f"  ours:   {ours!r}\n  theirs: {reference!r}\n  {first_difference(pieces, reference)}")
    assert len(generated) == num_reference_tokens, (
        f"same text but {len(generated)} tokens vs llama-simple's {num_reference_tokens}")
    assert len(generated) > 0, "the comparison is vacuous: nothing was generated"
