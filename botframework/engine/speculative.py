"""Verifying speculative drafts: the longest prefix the target model agrees with, plus one.

    item [last, d1..dk] decoded with logits at k + 1 positions
    -> sample position 0 with the request's sampler; equal to d1? keep going at position 1 ...
    -> stop at the first sample that differs (the correction) or after position k (the bonus)

With a deterministic (one-hot) draft this is exactly the speculative-sampling acceptance rule:
"accept d with probability p(d), else sample from p with d removed and renormalised" draws the
same tokens, with the same probabilities, as "sample x ~ p; accept if x == d, else emit x":
P(accept) = p(d), and given x != d, x is distributed as p(. | x != d). So greedy requests get
token-for-token the output they would get without drafts, sampled ones keep their distribution,
and everything the sampler does per token (penalty history, grammar, RNG) sees exactly the
tokens that are kept: it is never asked about a rejected draft.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def verify_drafts(drafts: Sequence[int], sample_at: Callable[[int], int]) -> list[int]:
    """The tokens to emit: sample_at(i) is the sampled token at draft position i (0: after the
    last real token); stops at the first one that differs from drafts[i], or after len(drafts)."""
    out: list[int] = []
    for i in range(len(drafts) + 1):
        token = sample_at(i)
        out.append(token)
        if i == len(drafts) or token != drafts[i]:
            break
    return out
