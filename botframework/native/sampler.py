"""SamplerChain: a llama_sampler chain built from a frozen SamplerSpec.

    logit_bias -> penalties -> grammar -> top_k -> typical -> top_p -> min_p -> temp -> dist
    (temperature <= 0: ... -> grammar -> greedy)

The order follows llama.cpp's common sampler. llama_sampler_sample() accepts the sampled
token into every stage (grammar state, penalty history).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Mapping

import numpy as np

from botframework.errors import ClosedError, GrammarError, InvalidRequestError
from botframework.native._lib import ffi, lib
from botframework.native.model import Model


@dataclass(frozen=True)
class GrammarSpec:
    """A GBNF grammar; lazy grammars only start constraining after a trigger appears."""

    gbnf: str
    root: str = "root"
    lazy: bool = False
    trigger_patterns: tuple[str, ...] = ()
    trigger_tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class SamplerSpec:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    grammar: GrammarSpec | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 100.0:
            raise ValueError("temperature must be in [0, 100]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        for name in ("top_p", "min_p", "typical_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.repeat_penalty <= 0.0:
            raise ValueError("repeat_penalty must be > 0")
        if self.repeat_last_n < -1:
            raise ValueError("repeat_last_n must be >= -1")
        if self.seed is not None and not 0 <= self.seed < 2**32 - 1:
            raise ValueError("seed must be in [0, 2**32 - 2]")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class SamplerChain:
    def __init__(self, model: Model, spec: SamplerSpec) -> None:
        self.spec = spec
        params = lib().llama_sampler_chain_default_params()
        params.no_perf = True
        chain = lib().llama_sampler_chain_init(params)
        self._handle: Any = chain
        self._grammar: Any = None  # the grammar stage (owned by the chain), for checked accepts
        # llama_token_data {int32 id; float logit; float p} for every token, reused per sample
        self._candidates = np.zeros(model.n_vocab, dtype=np.dtype(
            [("id", np.int32), ("logit", np.float32), ("p", np.float32)]))
        self._ids = np.arange(model.n_vocab, dtype=np.int32)
        self._array = ffi.new("llama_token_data_array *")
        self._data = ffi.cast("llama_token_data *", ffi.from_buffer(self._candidates))
        self._one = ffi.new("llama_token_data[1]")
        self._one_array = ffi.new("llama_token_data_array *")
        self._one_array.data = self._one
        try:
            self._build(model, spec)
        except BaseException:
            self.close()
            raise

    def _add(self, sampler: Any, what: str) -> None:
        if sampler == ffi.NULL:
            raise GrammarError(f"could not create the {what} sampler") if what == "grammar" else \
                ValueError(f"could not create the {what} sampler")
        lib().llama_sampler_chain_add(self._handle, sampler)

    def _build(self, model: Model, spec: SamplerSpec) -> None:
        L = lib()
        if spec.logit_bias:
            model.check_tokens(list(spec.logit_bias), param="logit_bias")
            arr = ffi.new("llama_logit_bias[]", len(spec.logit_bias))
            for i, (token, bias) in enumerate(spec.logit_bias.items()):
                arr[i].token = token
                arr[i].bias = bias
            self._add(L.llama_sampler_init_logit_bias(model.n_vocab, len(spec.logit_bias), arr), "logit_bias")
        if spec.repeat_penalty != 1.0 or spec.presence_penalty or spec.frequency_penalty:
            last_n = model.n_vocab if spec.repeat_last_n == -1 else spec.repeat_last_n
            self._add(L.llama_sampler_init_penalties(model.n_vocab, last_n, spec.repeat_penalty,
                                                     spec.frequency_penalty, spec.presence_penalty), "penalties")
        if spec.grammar is not None:
            self._grammar = _grammar_sampler(model, spec.grammar)
            self._add(self._grammar, "grammar")
        if spec.greedy:
            self._add(L.llama_sampler_init_greedy(), "greedy")
            return
        if spec.top_k > 0:
            self._add(L.llama_sampler_init_top_k(spec.top_k), "top_k")
        if spec.typical_p < 1.0:
            self._add(L.llama_sampler_init_typical(spec.typical_p, 1), "typical")
        if spec.top_p < 1.0:
            self._add(L.llama_sampler_init_top_p(spec.top_p, 1), "top_p")
        if spec.min_p > 0.0:
            self._add(L.llama_sampler_init_min_p(spec.min_p, 1), "min_p")
        self._add(L.llama_sampler_init_temp(spec.temperature), "temperature")
        seed = L.LLAMA_DEFAULT_SEED if spec.seed is None else spec.seed
        self._add(L.llama_sampler_init_dist(seed), "dist")

    @property
    def handle(self) -> Any:
        if self._handle is None:
            raise ClosedError("sampler is closed")
        return self._handle

    def sample(self, context: Any, batch_index: int) -> int:
        """Sample from output `batch_index` of the context's last decode, and accept it.

        llama_sampler_sample() without its two process-killing paths: a missing output
        (GGML_ASSERT) and a grammar that rejects every token (greedy/dist then pick a -inf
        token whose accept aborts or throws through the C API).
        """
        L = lib()
        logits = L.llama_get_logits_ith(context.handle, batch_index)
        if logits == ffi.NULL:
            raise InvalidRequestError(f"batch output {batch_index} has no logits", param="batch_index")
        n = len(self._candidates)
        # samplers sort and truncate in place: refill ids, logits and p every time
        self._candidates["id"] = self._ids
        self._candidates["logit"] = np.frombuffer(ffi.buffer(logits, n * 4), dtype=np.float32)
        self._candidates["p"] = 0.0
        array = self._array
        array.data, array.size, array.selected, array.sorted = self._data, n, -1, False
        L.llama_sampler_apply(self.handle, array)
        chosen = array.selected
        if not 0 <= chosen < array.size or not math.isfinite(array.data[chosen].logit) \
                and array.data[chosen].logit < 0:
            raise GrammarError("no token satisfies the grammar here", param="grammar")
        token = int(array.data[chosen].id)
        L.llama_sampler_accept(self.handle, token)
        return token

    def accept(self, token: int) -> None:
        """Feed a token the caller chose (prefill, replay); GrammarError if the grammar rejects it."""
        if self._grammar is not None:
            self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
            self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
            lib().llama_sampler_apply(self._grammar, self._one_array)
            if self._one[0].logit == -math.inf:
                raise GrammarError(f"token {token} is not allowed by the grammar here", param="grammar")
        lib().llama_sampler_accept(self.handle, token)

    def reset(self) -> None:
        lib().llama_sampler_reset(self.handle)

    def close(self) -> None:
        if self._handle is not None:
            lib().llama_sampler_free(self._handle)  # frees the samplers added to it too
            self._handle = None

    def __enter__(self) -> SamplerChain:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


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
