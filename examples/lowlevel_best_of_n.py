"""Best-of-n on the low-level API: the prompt is decoded once, its KV cells shared by n
sequences (seq_cp), then n samples grow in one batch per step; the most likely one wins.

    python examples/lowlevel_best_of_n.py ["your prompt"]
"""

import sys

import numpy as np

from botframework.native import Batch, Context, ContextParams, Model, SamplerChain, SamplerSpec
from botframework.native.logits import logits_view
from botframework.runtime.pull import pull

N, MAX_TOKENS = 4, 40
prompt = sys.argv[1] if len(sys.argv) > 1 else "Write a one-line slogan for a bakery."

model = Model(pull("smollm2-135m-instruct"))
ctx = Context(model, ContextParams(n_ctx=1024, n_batch=256, n_seq_max=N))
text = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
tokens = model.tokenize(text, parse_special=True)

batch = Batch(256)
last = batch.add_sequence(tokens, 0, 0, logits_last=True)  # the prompt, once, on sequence 0
ctx.decode(batch)
for seq_id in range(1, N):
    ctx.memory.seq_cp(0, seq_id)  # sequences 1..n-1 share its cells: nothing recomputed

samplers = [SamplerChain(model, SamplerSpec(temperature=0.9, seed=seq_id)) for seq_id in range(N)]
outputs = [last] * N          # where each sequence's next logits are in the last decode
answers: list[list[int]] = [[] for _ in range(N)]
logprob = np.zeros(N)
alive = set(range(N))
pos = len(tokens)
for _step in range(MAX_TOKENS):
    chosen = {}
    for seq_id in sorted(alive):
        row = logits_view(ctx, outputs[seq_id])  # a view of llama.cpp's buffer: no copy
        shifted = row - row.max()
        log_probs = shifted - np.log(np.exp(shifted).sum())
        token = samplers[seq_id].sample(ctx, outputs[seq_id])
        logprob[seq_id] += log_probs[token]
        if model.is_eog(token):
            alive.discard(seq_id)
        else:
            answers[seq_id].append(token)
            chosen[seq_id] = token
    if not chosen:
        break
    batch.clear()
    for seq_id, token in chosen.items():  # one decode carries every live sequence
        outputs[seq_id] = batch.add_sequence([token], pos, seq_id, logits_last=True)
    ctx.decode(batch)
    pos += 1

scores = [logprob[i] / max(1, len(answers[i])) for i in range(N)]
for i in range(N):
    print(f"[{i}] mean logprob {scores[i]:6.3f}: {model.detokenize(answers[i]).strip()}")
best = int(np.argmax(scores))
print(f"best of {N}: {model.detokenize(answers[best]).strip()}")
for sampler in samplers:
    sampler.close()
ctx.close()
model.close()
