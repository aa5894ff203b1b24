"""Context: one llama_context (KV cache + compute buffers) over a Model.

    Model + ContextParams --llama_init_from_model--> llama_context* (owned; the Model is kept
        alive by it, and closes it first when the Model itself is closed)
        decode(Batch) -> status.check_decode -> logits_ith(i) / embeddings
        memory -> KVMemory (seq_rm / seq_cp / ...); state_seq_get/set for eviction

Only one thread may use a Context at a time: the engine thread that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from botframework.errors import InvalidRequestError, ModelLoadError, NativeError
from botframework.native._hugepages import HugePageWatch
from botframework.native._lib import ffi, lib
from botframework.native._owned import NativeHandle
from botframework.native._status import check_decode
from botframework.native.batch import Batch
from botframework.native.cores import CORES, TAKE_TURNS_TOKENS
from botframework.native.kv_memory import KVMemory
from botframework.native.model import Model

_FLASH_ATTN = {"auto": "LLAMA_FLASH_ATTN_TYPE_AUTO", "on": "LLAMA_FLASH_ATTN_TYPE_ENABLED",
               "off": "LLAMA_FLASH_ATTN_TYPE_DISABLED"}
_POOLING = {"unspecified": "LLAMA_POOLING_TYPE_UNSPECIFIED", "none": "LLAMA_POOLING_TYPE_NONE",
            "mean": "LLAMA_POOLING_TYPE_MEAN", "cls": "LLAMA_POOLING_TYPE_CLS",
            "last": "LLAMA_POOLING_TYPE_LAST"}


@dataclass(frozen=True)
class ContextParams:
    """Context sizes and threads. n_ctx=0 takes the model's training context.

    kv_unified: all sequences share one KV buffer of n_ctx cells, which is what prefix
    sharing (seq_cp) and uneven sequence lengths need.
    """

    n_ctx: int = 4096
    n_batch: int = 2048
    n_ubatch: int = 512
    n_seq_max: int = 1
    n_threads: int = 1
    n_threads_batch: int = 1
    embeddings: bool = False
    pooling: str = "unspecified"
    flash_attn: str = "auto"
    kv_unified: bool = True
    hugepages: bool = True  # KV cache and compute buffers in huge pages, when the model uses them

    def __post_init__(self) -> None:
        if self.n_ctx < 0 or self.n_batch < 1 or self.n_ubatch < 1 or self.n_seq_max < 1:
            raise ValueError(f"invalid context sizes: {self}")
        if self.n_threads < 1 or self.n_threads_batch < 1:
            raise ValueError("n_threads and n_threads_batch must be >= 1")
        if self.flash_attn not in _FLASH_ATTN:
            raise ValueError(f"flash_attn must be one of {sorted(_FLASH_ATTN)}")
        if self.pooling not in _POOLING:
            raise ValueError(f"pooling must be one of {sorted(_POOLING)}")


class Context(NativeHandle):
    _what = "context"
    _frees = (("_handle", "llama_free"),)

    def __init__(self, model: Model, params: ContextParams = ContextParams()) -> None:
        if params.n_seq_max > lib().llama_max_parallel_sequences():
            raise InvalidRequestError(
                f"n_seq_max={params.n_seq_max} exceeds llama.cpp's limit {lib().llama_max_parallel_sequences()}")
        self.model = model
        self.params = params
        native = lib().llama_context_default_params()
        native.n_ctx = params.n_ctx
        native.n_batch = params.n_batch
        native.n_ubatch = min(params.n_ubatch, params.n_batch)
        native.n_seq_max = params.n_seq_max
        native.n_threads = params.n_threads
        native.n_threads_batch = params.n_threads_batch
        native.embeddings = params.embeddings
        native.pooling_type = getattr(lib(), _POOLING[params.pooling])
        native.flash_attn_type = getattr(lib(), _FLASH_ATTN[params.flash_attn])
        native.kv_unified = params.kv_unified
        native.no_perf = True
        with HugePageWatch(model.hugepages and params.hugepages) as watch:  # KV cache, compute buffers
            handle = lib().llama_init_from_model(model.handle, native)
        self.hugepage_bytes = watch.collapsed_bytes
        if handle == ffi.NULL:
            raise ModelLoadError(f"llama.cpp could not create a context ({params}); out of memory?")
        self._handle: Any = handle
        try:
            model.add_dependent(self)  # the model frees its weights only after this context
        except BaseException:
            self.close()
            raise
        self.n_ctx: int = lib().llama_n_ctx(handle)
        self.n_batch: int = lib().llama_n_batch(handle)
        self.n_ubatch: int = lib().llama_n_ubatch(handle)
        self._threads = (params.n_threads, params.n_threads_batch)  # llama.cpp's for 1 token, for more
        offloaded = int(model.placement.get("n_gpu_layers", 0) or 0)
        self._on_device = offloaded < 0 or offloaded >= model.num_layers > 0  # every layer on a GPU
        self.n_seq_max: int = lib().llama_n_seq_max(handle)
        self._n_vocab = model.n_vocab

    @property
    def memory(self) -> KVMemory:
        """The KV cache's per-sequence operations. A view made on each access: it keeps this
        context alive, and the context holds no reference back (no cycle for the GC to find)."""
        return KVMemory(self)

    def check_seq_id(self, seq_id: int, param: str = "seq_id") -> None:
        """InvalidRequestError unless 0 <= seq_id < n_seq_max, the ids llama_decode accepts
        (KV cache operations abort the process on some others: see KVMemory)."""
        if not 0 <= seq_id < self.n_seq_max:
            raise InvalidRequestError(f"sequence id {seq_id} out of range (0..{self.n_seq_max - 1})", param=param)

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        lib().llama_set_n_threads(self.handle, n_threads, n_threads_batch)
        self._threads = (n_threads, n_threads_batch)

    def cores_for(self, n_tokens: int) -> int:
        """The cores a decode of n_tokens keeps busy: llama.cpp's threads for it (n_threads for
        one token; for more, n_threads_batch, or n_threads for a last ubatch of one), or one
        when every layer runs on a GPU."""
        if self._on_device:
            return 1
        return max(self._threads) if n_tokens > 1 else self._threads[0]

    def set_embeddings(self, enabled: bool) -> None:
        lib().llama_set_embeddings(self.handle, enabled)

    # -- compute ----------------------------------------------------------------------------
    def decode(self, batch: Batch) -> None:
        """Run one llama_decode over the batch (the GIL is released while it runs), holding as
        many of the process's cores as it runs threads (native/cores.py: another context's
        decode that needs them waits meanwhile)."""
        handle = self.handle
        if batch.n_tokens == 0:
            return
        if batch.n_tokens > self.n_batch:
            raise InvalidRequestError(f"batch of {batch.n_tokens} tokens exceeds n_batch={self.n_batch}")
        if batch.n_tokens <= TAKE_TURNS_TOKENS:
            with CORES.hold(self.cores_for(batch.n_tokens)):
                rc = lib().llama_decode(handle, batch.native())
        else:  # a prompt step: shares the cores with the others' (see native/cores.py)
            rc = lib().llama_decode(handle, batch.native())
        if rc == -1:  # an invalid batch, refused before anything changed: a bad sequence id is ours
            batch.check_seq_ids(self.n_seq_max)
        check_decode(rc)

    def logits_ith(self, i: int) -> np.ndarray:
        """Logits of batch token i of the last decode (a copy: later decodes overwrite them).
        botframework.native.logits.logits_view gives the same memory as a writable view."""
        ptr = lib().llama_get_logits_ith(self.handle, i)
        if ptr == ffi.NULL:
            raise NativeError(f"no logits for batch index {i}", op="llama_get_logits_ith")
        return np.frombuffer(ffi.buffer(ptr, self._n_vocab * 4), dtype=np.float32).copy()

    def embeddings_ith(self, i: int) -> np.ndarray:
        ptr = lib().llama_get_embeddings_ith(self.handle, i)
        if ptr == ffi.NULL:
            raise NativeError(f"no embeddings for batch index {i}", op="llama_get_embeddings_ith")
        return np.frombuffer(ffi.buffer(ptr, self.model.n_embd * 4), dtype=np.float32).copy()

    @property
    def causal_attn(self) -> bool:
        """Whether a token attends only to those before it (decoder models): such a sequence
        can be computed in pieces through the KV cache."""
        return bool(lib().llama_get_causal_attn(self.handle))

    def embeddings_seq(self, seq_id: int) -> np.ndarray:
        self.check_seq_id(seq_id)
        ptr = lib().llama_get_embeddings_seq(self.handle, seq_id)
        if ptr == ffi.NULL:
            raise NativeError(f"no pooled embeddings for sequence {seq_id}", op="llama_get_embeddings_seq")
        return np.frombuffer(ffi.buffer(ptr, self.model.n_embd * 4), dtype=np.float32).copy()

    # -- per-sequence state (eviction to host RAM / disk) -----------------------------------
    def state_seq_get(self, seq_id: int) -> bytes:
        self.check_seq_id(seq_id)
        size = lib().llama_state_seq_get_size(self.handle, seq_id)
        # written in place: no second copy (fresh pages cost as much as the copy itself)
        buf = bytearray(size)
        written = lib().llama_state_seq_get_data(self.handle, ffi.from_buffer("uint8_t[]", buf, require_writable=True),
                                                 size, seq_id)
        if written == 0 and size != 0:
            raise NativeError(f"could not save the state of sequence {seq_id}", op="llama_state_seq_get_data")
        if written != size:
            del buf[written:]
        return buf  # type: ignore[return-value]  # a bytearray: bytes-like, never copied again

    def state_seq_set(self, seq_id: int, data: bytes) -> None:
        self.check_seq_id(seq_id)
        read = lib().llama_state_seq_set_data(self.handle, ffi.from_buffer("uint8_t[]", data), len(data), seq_id)
        if read == 0:
            raise NativeError(f"could not restore the state of sequence {seq_id}", op="llama_state_seq_set_data")
