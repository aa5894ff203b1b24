"""Beam search on the low-level API: each beam is a KV sequence; every step decodes the last
token of all beams in one batch, scores their expansions with numpy on the logits views, and
moves the winners' caches into place with seq_cp (two banks of sequence ids, so a parent is
never overwritten before its children are copied).

    python examples/lowlevel_beam_search.py ["prompt"]
"""

import sys

import numpy as np

from botframework.native import Batch, Context, ContextParams, Model
from botframework.native.logits import logits_view
from botframework.runtime.pull import pull

BEAMS, STEPS = 3, 16
prompt = sys.argv[1] if len(sys.argv) > 1 else "The three primary colours are"

model = Model(pull("smollm2-135m-instruct"))
ctx = Context(model, ContextParams(n_ctx=1024, n_batch=128, n_seq_max=2 * BEAMS))
mem = ctx.memory
tokens = model.tokenize(prompt)
batch = Batch(128)
batch.add_sequence(tokens[:-1], 0, 0, logits_last=False)  # the prompt but its last token, once
ctx.decode(batch)
for seq_id in range(1, BEAMS):
    mem.seq_cp(0, seq_id)

# a beam: (total log-probability, generated tokens, its sequence id); the first step's beams
# are copies of each other, so only beam 0 expands then
beams = [(0.0, [tokens[-1]], seq_id) for seq_id in range(BEAMS)]
pos = len(tokens) - 1
finished: list[tuple[float, list[int]]] = []
for step in range(STEPS):
    batch.clear()
    rows = [batch.add_sequence([b[1][-1]], pos, b[2], logits_last=True) for b in beams]
    ctx.decode(batch)
    logits = logits_view(ctx, rows)  # (beams, n_vocab), one view over llama.cpp's buffer
    shifted = logits - logits.max(axis=1, keepdims=True)
    logprobs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    scores = np.array([b[0] for b in beams])[:, None] + logprobs
    if step == 0:
        scores[1:] = -np.inf
    best = np.argsort(scores, axis=None)[::-1][: 2 * BEAMS]  # room for finished ones
    bank = (step + 1) % 2 * BEAMS  # the other bank of sequence ids
    chosen = []
    for flat in best:
        parent, token = divmod(int(flat), logits.shape[1])
        if model.is_eog(token):
            finished.append((float(scores[parent, token]), beams[parent][1][1:]))
        elif len(chosen) < BEAMS:
            chosen.append((float(scores[parent, token]), beams[parent][1] + [token], beams[parent][2]))
    new_beams = []
    for k, (score, seq_tokens, parent_seq) in enumerate(chosen):
        mem.seq_rm(bank + k)           # the child's id: empty it, then share the parent's cells
        mem.seq_cp(parent_seq, bank + k)
        new_beams.append((score, seq_tokens, bank + k))
    for _score, _tokens, old in beams:
        mem.seq_rm(old)                # the old bank is done
    beams = new_beams
    pos += 1

finished += [(b[0], b[1][1:]) for b in beams]
finished.sort(key=lambda f: f[0] / max(1, len(f[1])), reverse=True)  # length-normalised
for score, seq_tokens in finished[:BEAMS]:
    text = prompt + model.detokenize(seq_tokens)
    print(f"{score:7.2f}  {text!r}")
ctx.close()
model.close()
