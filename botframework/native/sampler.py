"""SamplerChain: llama_sampler chains built from a frozen SamplerSpec, plus a grammar.

    pre:   logit_bias -> penalties                  (adjust logits, keep every candidate)
    post:  top_k -> typical -> top_p -> min_p -> temp -> dist    (temperature <= 0: greedy)
    grammar: kept outside the chains, applied as llama.cpp's common sampler does it:
      1. sample without the grammar; 2. ask the grammar about that one token; if it is
      allowed, done (the common case: one grammar check instead of n_vocab);
      3. otherwise apply the grammar to what `post` kept in step 1 (top_k/top_p/min_p
      survivors) and sample among the allowed ones; if none is allowed, to the best
      candidates only (GRAMMAR_TIERS) when that decides as all of them would (see
      _sample_constrained), else to all of them, and sample again through `post`.

The order follows llama.cpp's common sampler (common/sampling.cpp, common_sampler_sample).
Accepting a token advances the grammar and the chain (penalty history). A non-lazy grammar
that starts with the chat template's generation prompt is fed those prompt tokens first
(`GrammarSpec.prefill`), as common_sampler_init does.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import Any

import numpy as np

from botframework.errors import GrammarError, InvalidRequestError
from botframework.native._lib import ffi, lib
from botframework.native._owned import NativeHandle
from botframework.native.model import Model
from botframework.specs import GrammarSpec, SamplerSpec

# Step 3 tries the grammar on the best 256, then 4096 candidates (by logit) before all of
# them: llama.cpp's grammar check decodes every candidate's text, ~0.2 us each.
GRAMMAR_TIERS = (256, 4096)
GREEDY_PROBES = 32  # greedy: check this many best tokens one at a time first


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class SamplerChain(NativeHandle):
    """The `pre` and `post` chains and the grammar of one request. Each chain frees the
    samplers added to it; the grammar sampler points into the model's vocabulary, so the
    model closes this sampler before it is freed."""

    _what = "sampler"
    _frees = (("_handle", "llama_sampler_free"), ("_pre", "llama_sampler_free"),
              ("_grammar", "llama_sampler_free"))
    _pre: Any = None
    _grammar: Any = None  # kept out of the chains: applied only when needed

    def __init__(self, model: Model, spec: SamplerSpec) -> None:
        model.check_open()  # before anything is allocated
        self.spec = spec
        self._model = model
        params = lib().llama_sampler_chain_default_params()
        params.no_perf = True
        self._pre = lib().llama_sampler_chain_init(params)
        self._handle: Any = lib().llama_sampler_chain_init(params)  # `post`
        self._grammar = None  # on the instance: sample() reads it per token (faster than the class's)
        self._prefill: list[int] = []
        self._ids = _token_ids(model.n_vocab)
        self._array = ffi.new("llama_token_data_array *")
        # grammar only: a tier of best candidates (tiers are approximate: room for twice the
        # largest), and the logits after `pre`
        self._tiers = tuple(k for k in GRAMMAR_TIERS if k < model.n_vocab)
        with_grammar = spec.grammar is not None
        self._short = np.zeros(2 * max(self._tiers, default=1) if with_grammar else 1, dtype=_TOKEN_DATA)
        self._short_data = ffi.cast("llama_token_data *", ffi.from_buffer(self._short))
        self._adjusted = np.zeros(model.n_vocab if with_grammar else 1, dtype=np.float32)
        self._adjusted_ptr = ffi.cast("float *", ffi.from_buffer(self._adjusted))
        self._one = ffi.new("llama_token_data[1]")
        self._one_array = ffi.new("llama_token_data_array *")
        self._one_array.data = self._one
        self.num_grammar_fast = 0      # samples the grammar allowed at once (step 2)
        self.num_grammar_kept = 0      # decided among the candidates `post` kept
        self.num_grammar_short = 0     # decided on a tier of best candidates
        self.num_grammar_full = 0      # needed the grammar over the whole vocabulary
        try:
            self._build(model, spec)
            if spec.grammar is not None:
                self._grammar = _grammar_sampler(model, spec.grammar)
                model.add_dependent(self)
                self._prefill = _prefill_tokens(model, spec.grammar)
                self._feed_prefill()
        except BaseException:
            self.close()
            raise

    def _add(self, chain: Any, sampler: Any, what: str) -> None:
        if sampler == ffi.NULL:
            raise ValueError(f"could not create the {what} sampler")
        lib().llama_sampler_chain_add(chain, sampler)

    def _build(self, model: Model, spec: SamplerSpec) -> None:
        L = lib()
        pre, post = self._pre, self._handle
        if spec.logit_bias:
            model.check_tokens(list(spec.logit_bias), param="logit_bias")
            arr = ffi.new("llama_logit_bias[]", len(spec.logit_bias))
            for i, (token, bias) in enumerate(spec.logit_bias.items()):
                arr[i].token = token
                arr[i].bias = bias
            self._add(pre, L.llama_sampler_init_logit_bias(model.n_vocab, len(spec.logit_bias), arr), "logit_bias")
        if spec.repeat_penalty != 1.0 or spec.presence_penalty or spec.frequency_penalty:
            last_n = model.n_vocab if spec.repeat_last_n == -1 else spec.repeat_last_n
            self._add(pre, L.llama_sampler_init_penalties(model.n_vocab, last_n, spec.repeat_penalty,
                                                          spec.frequency_penalty, spec.presence_penalty), "penalties")
        self._pre_arg = pre if L.llama_sampler_chain_n(pre) else ffi.NULL  # bf_sample's arguments, fixed per chain
        self._greedy = spec.greedy
        self._n_vocab = model.n_vocab
        if spec.greedy:
            self._add(post, L.llama_sampler_init_greedy(), "greedy")
            return
        if spec.top_k > 0:
            self._add(post, L.llama_sampler_init_top_k(spec.top_k), "top_k")
        if spec.typical_p < 1.0:
            self._add(post, L.llama_sampler_init_typical(spec.typical_p, 1), "typical")
        if spec.top_p < 1.0:
            self._add(post, L.llama_sampler_init_top_p(spec.top_p, 1), "top_p")
        if spec.min_p > 0.0:
            self._add(post, L.llama_sampler_init_min_p(spec.min_p, 1), "min_p")
        self._add(post, L.llama_sampler_init_temp(spec.temperature), "temperature")
        seed = L.LLAMA_DEFAULT_SEED if spec.seed is None else spec.seed
        self._add(post, L.llama_sampler_init_dist(seed), "dist")

    def _feed_prefill(self) -> None:
        for token in self._prefill:
            if not self._grammar_allows(token):
                raise GrammarError("the grammar does not start with the chat template's generation prompt "
                                   f"(rejects prefill token {token})", param="grammar")
            lib().llama_sampler_accept(self._grammar, token)

    @property
    def has_grammar(self) -> bool:
        return self._grammar is not None

    @property
    def pre_arg(self) -> Any:
        """bf_sample's `pre`: the logit-adjusting chain, or NULL when it is empty."""
        return self._pre_arg

    @property
    def greedy(self) -> bool:
        return bool(self._greedy)

    def sample(self, context: Any, batch_index: int) -> int:
        """Sample from output `batch_index` of the context's last decode, and accept it.

        llama_sampler_sample() without its two process-killing paths: a missing output
        (GGML_ASSERT) and a grammar that rejects every token (greedy/dist then pick a -inf
        token whose accept aborts or throws through the C API).
        """
        L = lib()
        post = self.handle
        n = self._n_vocab
        cand, data = scratch_candidates(n)
        if self._grammar is None:  # the per-token path: one C call (native/bf_shim.h, bf_sample)
            token = L.bf_sample(context.handle, batch_index, self._pre_arg, post, self._greedy, data, n)
            if token == -1:
                raise InvalidRequestError(f"batch output {batch_index} has no logits", param="batch_index")
            if token == -2:
                raise InvalidRequestError("no token can be sampled here: logit_bias excludes every candidate",
                                          param="logit_bias")
            return int(token)
        # Samplers sort and truncate in place: the candidates (ids, logits after `pre`, p) are
        # refilled every time, and the adjusted logits copied for the grammar's later steps.
        filled = L.bf_fill_candidates(context.handle, batch_index, self._pre_arg, data, n, self._adjusted_ptr)
        if filled == -1:
            raise InvalidRequestError(f"batch output {batch_index} has no logits", param="batch_index")
        token = self._select(data, n)
        if self._grammar_allows(token):
            self.num_grammar_fast += 1
        else:
            kept = self._array.size if self._array.size < n else 0  # greedy keeps everything
            token = self._sample_constrained(self._adjusted, cand["id"][:kept].copy())
        L.llama_sampler_accept(self._grammar, token)
        L.llama_sampler_accept(self._pre, token)
        L.llama_sampler_accept(post, token)
        return token

    def _select(self, data: Any, n: int) -> int:
        """Run `post` over the first n entries at `data`; the token it picks."""
        array = self._array
        array.data, array.size, array.selected, array.sorted = data, n, -1, False
        lib().llama_sampler_apply(self.handle, array)
        chosen = array.selected
        if not 0 <= chosen < array.size or not math.isfinite(array.data[chosen].logit):
            raise GrammarError("no token satisfies the grammar here", param="grammar")
        return int(array.data[chosen].id)

    def _sample_constrained(self, logits: np.ndarray, kept: np.ndarray) -> int:
        """Step 3: the grammar, then `post`, over as few candidates as decide the token.

        Sampling: first the candidates `post` kept in step 1 (a few dozen): choosing among
        the allowed ones keeps the request's top_k/top_p/min_p truncation meaning what it
        says. Greedy: the best tokens one at a time; the first allowed one is the answer.
        Then a tier of the best (adjusted) logits, which decides like the whole vocabulary
        would when greedy and one of them is allowed; or when at least top_k are allowed
        (`post` keeps only top_k anyway); or when min_p would drop every token outside the
        tier (its logits are all below best allowed + ln(min_p)). Else all, as upstream.
        `logits` is this sampler's scratch copy: it may be changed.
        """
        spec = self.spec
        if len(kept):
            short = self._fill_short(kept, logits)
            if short is not None and np.isfinite(short["logit"]).any():
                self.num_grammar_kept += 1
                return self._select(self._short_data, len(kept))
        elif spec.greedy:
            for _ in range(GREEDY_PROBES):
                token = int(np.argmax(logits))
                if logits[token] == -math.inf:
                    break
                if self._grammar_allows(token):
                    self.num_grammar_kept += 1
                    return token
                logits[token] = -math.inf
        n = len(logits)
        sample = logits[:: max(1, n // 2048)]
        for k in self._tiers:
            q = max(1, round(k * len(sample) / n))
            floor = float(np.partition(sample, -q)[-q])  # ~k logits are >= this one
            ids = np.flatnonzero(logits >= floor).astype(np.int32)
            if floor == -math.inf or len(ids) > len(self._short):
                continue
            short = self._fill_short(ids, logits)
            assert short is not None
            allowed = short["logit"][np.isfinite(short["logit"])]
            outside_below = float(logits[logits < floor].max(initial=-math.inf))
            if allowed.size and (spec.greedy or (spec.top_k > 0 and allowed.size >= spec.top_k) or (
                    spec.min_p > 0.0 and float(allowed.max()) + math.log(spec.min_p) > outside_below)):
                self.num_grammar_short += 1
                return self._select(self._short_data, len(ids))
        self.num_grammar_full += 1
        cand, data = scratch_candidates(n)
        cand["id"] = self._ids
        cand["logit"] = logits
        cand["p"] = 0.0
        array = self._array
        array.data, array.size, array.selected, array.sorted = data, n, -1, False
        lib().llama_sampler_apply(self._grammar, array)
        return self._select(data, n)

    def _fill_short(self, ids: np.ndarray, logits: np.ndarray) -> np.ndarray | None:
        """Put these candidates in the short buffer and let the grammar mask them."""
        if len(ids) > len(self._short):
            return None
        short = self._short[: len(ids)]
        short["id"] = ids
        short["logit"] = logits[ids]
        short["p"] = 0.0
        array = self._array
        array.data, array.size, array.selected, array.sorted = self._short_data, len(ids), -1, False
        lib().llama_sampler_apply(self._grammar, array)
        return short

    def _grammar_allows(self, token: int) -> bool:
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 1.0, 0.0
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        lib().llama_sampler_apply(self._grammar, self._one_array)
        allowed: bool = self._one[0].logit != -math.inf
        return allowed

    def accept(self, token: int) -> None:
        """Feed a token the caller chose (prefill, replay); GrammarError if the grammar rejects it."""
        post = self.handle  # first: a closed sampler's NULL chains would crash llama.cpp
        if self._grammar is not None:
            if not self._grammar_allows(token):
                raise GrammarError(f"token {token} is not allowed by the grammar here", param="grammar")
            lib().llama_sampler_accept(self._grammar, token)
        lib().llama_sampler_accept(self._pre, token)
        lib().llama_sampler_accept(post, token)

    def reset(self) -> None:
        post = self.handle
        lib().llama_sampler_reset(self._pre)
        lib().llama_sampler_reset(post)
        if self._grammar is not None:
            lib().llama_sampler_reset(self._grammar)
            self._feed_prefill()


class _Scratch(threading.local):
    def __init__(self) -> None:
        self.candidates: dict[int, tuple[np.ndarray, Any]] = {}


_scratch = _Scratch()


def scratch_candidates(n_vocab: int) -> tuple[np.ndarray, Any]:
    """This thread's llama_token_data {int32 id; float logit; float p} per token, and a pointer
    to it. Every sample fills it before use and a thread runs one sample at a time, so the
    samplers of a thread share it: a request no longer allocates (and faults in) 590 KB."""
    entry = _scratch.candidates.get(n_vocab)
    if entry is None:
        array = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        entry = _scratch.candidates[n_vocab] = (array, ffi.cast("llama_token_data *", ffi.from_buffer(array)))
    return entry


@lru_cache(maxsize=4)
def _token_ids(n_vocab: int) -> np.ndarray:
    ids = np.arange(n_vocab, dtype=np.int32)
    ids.setflags(write=False)  # shared by every sampler: read only
    return ids


def _prefill_tokens(model: Model, grammar: GrammarSpec) -> list[int]:
    """The generation prompt's tokens, as common_sampler_init computes them."""
    if grammar.lazy or not grammar.prefill:
        return []
    tokens = model.tokenize(grammar.prefill, add_special=False, parse_special=True)
    if tokens and model.token_to_piece(tokens[0], special=True)[:1].isspace() \
            and not grammar.prefill[:1].isspace():
        tokens = tokens[1:]  # some tokenizers put a space before a leading special token
    return tokens


def _grammar_sampler(model: Model, grammar: GrammarSpec) -> Any:
    L = lib()
    gbnf = grammar.gbnf.encode("utf-8")
    root = grammar.root.encode("utf-8")
    if not grammar.lazy:
        sampler = L.llama_sampler_init_grammar(model.vocab, gbnf, root)
    else:
        patterns = [ffi.new("char[]", p.encode("utf-8")) for p in grammar.trigger_patterns]
        pattern_arr = ffi.new("const char *[]", patterns) if patterns else ffi.NULL
        token_arr = ffi.new("llama_token[]", list(grammar.trigger_tokens)) if grammar.trigger_tokens else ffi.NULL
        sampler = L.llama_sampler_init_grammar_lazy_patterns(
            model.vocab, gbnf, root, pattern_arr, len(patterns), token_arr, len(grammar.trigger_tokens))
    if sampler == ffi.NULL:
        raise GrammarError("the grammar could not be parsed by llama.cpp (invalid GBNF)", param="grammar")
    return sampler
