"""Your own sampler, in numpy, inside the batched scheduler: a logits processor that samples
(temperature + min-p with its own random generator) and leaves only its choice to the
request's sampler. Every request naming it is handled in one call per step, as one array.

    python examples/lowlevel_numpy_sampler.py
"""

from collections.abc import Sequence

import numpy as np

from botframework import LocalLLM
from botframework.processors import RepetitionWindowPenalty, force_tokens


class NumpyMinP:
    """Sample each row from softmax(logits / temperature), keeping tokens whose probability is at
    least min_p times the best one's."""

    def __init__(self, temperature: float = 0.8, min_p: float = 0.1, seed: int = 0) -> None:
        self.temperature, self.min_p = temperature, min_p
        self.rng = np.random.default_rng(seed)
        self.rows_per_call: list[int] = []

    def __call__(self, logits: np.ndarray, histories: Sequence[Sequence[int]]) -> None:
        self.rows_per_call.append(len(logits))       # every sequence that named us, this step
        scaled = logits / self.temperature             # (rows, n_vocab)
        probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        probs[probs < self.min_p] = 0.0                # the best token has probability 1 here
        probs /= probs.sum(axis=1, keepdims=True)
        cumulative = probs.cumsum(axis=1)
        draws = self.rng.random((len(logits), 1))
        choices = (cumulative < draws).sum(axis=1)     # inverse CDF, every row at once
        force_tokens(logits, np.minimum(choices, logits.shape[1] - 1))


sampler = NumpyMinP(seed=7)
prompts = ["Name a colour.", "Name a fruit.", "Name a planet.", "Name a river."]
with LocalLLM("smollm2-135m-instruct", num_slots=4) as llm:
    # queue all four at once: the scheduler batches them, so the sampler sees them together
    streams = [llm.stream_chat_deltas(p, max_tokens=24, logits_processors=[RepetitionWindowPenalty(1.2), sampler])
               for p in prompts]
    for prompt, stream in zip(prompts, streams, strict=True):
        answer = "".join(delta.text for delta in stream)
        print(f"{prompt} -> {answer.strip()!r}")
print(f"sampler calls: {len(sampler.rows_per_call)}, most rows in one call: {max(sampler.rows_per_call)}")
