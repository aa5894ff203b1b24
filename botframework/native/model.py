"""Model: an mmap-loaded GGUF, its metadata and vocabulary.

    path --llama_model_load_from_file--> llama_model* (owned; freed by close())
         -> vocab: tokenize / token_to_piece / detokenize, special tokens, chat template
    Contexts and grammar samplers point into it: close() closes them first.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botframework.config import GpuLayers, parse_gpu_layers, parse_rpc_servers
from botframework.errors import ClosedError, InvalidRequestError, ModelLoadError, ModelNotFoundError
from botframework.native._gguf_header import header_problem
from botframework.native._hugepages import HugePageWatch, available
from botframework.native._lib import ffi, lib
from botframework.native._owned import NativeHandle
from botframework.native.devices import local_gpus, probe_rpc_server, take_json
from botframework.native.omp import release_compute_threads

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelParams:
    """How to load a model.

    n_gpu_layers: layers offloaded to this build's GPUs and the RPC servers (-1: all); "auto":
    as many as fit the devices' free memory beside a context of fit_n_ctx cells for fit_n_seq
    sequences (llama.cpp's common_fit_params), 0 when there is no device.
    rpc_servers: "host:port" of `botframework rpc-server`s (llama.cpp's RPC backend): the
    offloaded layers are split over them (and the local GPUs) by their free memory.

    hugepages: weights that stay on the CPU are read into anonymous memory in 2 MiB pages
    instead of being mmap'd (see botframework.native._hugepages: +7% decode here); the model's
    contexts put their KV cache in huge pages too. Off, or where the kernel has no THP, or
    with layers on a GPU: llama.cpp's mmap, shared with other processes.

    repack: weights on the CPU in the CPU's own layouts where it has kernels for them (llama.cpp's
    extra buffer types: AMX, AVX2/AVX512 or ARM repacks; llama-server's --no-repack turns them
    off). Those kernels round differently from the plain ones an RPC server or another machine
    runs, so greedy output can differ from theirs after a few tokens; off, it matches them.
    """

    n_gpu_layers: GpuLayers = 0
    vocab_only: bool = False
    hugepages: bool = True
    repack: bool = True
    rpc_servers: tuple[str, ...] = ()
    fit_n_ctx: int = 4096
    fit_n_seq: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_gpu_layers", parse_gpu_layers(self.n_gpu_layers))
        object.__setattr__(self, "rpc_servers", parse_rpc_servers(self.rpc_servers))


@dataclass(frozen=True)
class SpecialTokens:
    bos: int
    eos: int
    eot: int
    nl: int
    pad: int
    fim_pre: int
    fim_suf: int
    fim_mid: int
    add_bos: bool
    add_eos: bool


def _check_gguf_file(path: Path) -> None:
    """Fail with a clear typed error before llama.cpp sees a bad path."""
    if not path.exists():
        raise ModelNotFoundError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"model path is a directory, not a GGUF file: {path}")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"not a GGUF file (bad magic {magic!r}): {path}")
    problem = header_problem(path)  # a value llama.cpp would assert on, aborting the process
    if problem is not None:
        raise ModelLoadError(f"not a model llama.cpp can load: {problem}: {path}")


class Model(NativeHandle):
    """A loaded GGUF model. Thread-safe for reads (tokenize, metadata) once loaded.

    After close(), what was copied out at load (n_vocab, special, eog_tokens, pieces already
    asked for) still reads; anything that needs llama.cpp raises ClosedError.
    """

    _what = "model"
    _frees = (("_vocab", None), ("_handle", "llama_model_free"))  # the vocab is part of the model
    _vocab: Any = None
    _dependents: weakref.WeakSet[NativeHandle] | None = None  # None: not loaded, or closing
    _rpc_models: weakref.WeakSet[Model] = weakref.WeakSet()  # loaded models with RPC servers
    rpc_servers: tuple[str, ...] = ()

    def __init__(self, path: str | os.PathLike[str], params: ModelParams = ModelParams()) -> None:
        self.path = Path(path)
        _check_gguf_file(self.path)
        for endpoint in params.rpc_servers:
            if not any(endpoint in other.rpc_servers for other in list(Model._rpc_models) if not other.closed):
                try:  # ggml-rpc would abort the process on a server that does not answer
                    probe_rpc_server(endpoint)
                except ConnectionError as exc:
                    raise ModelLoadError(f"cannot load {self.path}: {exc}") from None
        native_params = lib().llama_model_default_params()
        layers = params.n_gpu_layers
        if layers == "auto" and not params.rpc_servers and not params.vocab_only and not local_gpus():
            layers = 0  # nothing to offload to: no fit to measure
        native_params.n_gpu_layers = 0 if layers == "auto" else layers
        native_params.vocab_only = params.vocab_only
        native_params.use_extra_bufts = params.repack
        self.hugepages = params.hugepages and layers == 0 and not params.vocab_only and available()
        if self.hugepages:
            native_params.load_mode = lib().LLAMA_LOAD_MODE_NONE
        plan = ffi.new("char **")
        try:
            with HugePageWatch(self.hugepages) as watch:
                handle = lib().bf_model_load(os.fsencode(self.path), ffi.addressof(native_params),
                                             ",".join(params.rpc_servers).encode(), int(layers == "auto"),
                                             params.fit_n_ctx, params.fit_n_seq, plan)
        finally:
            # Loading may repack the weights in an OpenMP parallel region (AMX here), so this
            # thread (a server's loader, a LocalLLM user's own thread) would keep a pool of OpenMP
            # workers it may never use again. With it alive libgomp manages more threads than
            # there are CPUs, and every barrier of the thread that does decode (an engine
            # thread) spins "throttled" (1,000 spins, native/omp.py) before it sleeps: once a
            # step's barrier waits grow past that (attention over ~160 tokens, SmolLM2 on 2
            # threads here) each costs a futex sleep and wake, and a token took 9.5-10.5 ms
            # instead of 7-8. Let it go; a thread that decodes next starts one again (~0.1 ms).
            release_compute_threads()
        self.hugepage_bytes = watch.collapsed_bytes
        placement = take_json(plan[0]) if plan[0] != ffi.NULL else {}
        if handle == ffi.NULL:
            if "error" in placement:
                raise ModelLoadError(f"cannot load {self.path}: {placement['error']}")
            raise ModelLoadError(
                f"llama.cpp could not load {self.path} (truncated, corrupt or unsupported GGUF; "
                "set BOTFRAMEWORK_LLAMA_LOG=info for details)")
        # where the layers went: {"devices": [...], "n_gpu_layers", "fit", "tensor_split"}
        self.placement: dict[str, Any] = placement
        self.rpc_servers = params.rpc_servers
        if params.rpc_servers:  # connected now (one connection per server for the whole process)
            Model._rpc_models.add(self)
        self._handle: Any = handle
        self._vocab = lib().llama_model_get_vocab(handle)
        self._lock = threading.Lock()  # guards _dependents: a sampler may be built on any thread
        self._dependents = weakref.WeakSet()
        self.n_vocab: int = lib().llama_vocab_n_tokens(self._vocab)
        self._pieces: dict[int, bytes] = {}  # token_to_piece(special=False): once per token id
        self._texts: dict[int, str | None] = {}  # piece_text: once per token id
        self.n_ctx_train: int = lib().llama_model_n_ctx_train(handle)
        self.n_embd: int = lib().llama_model_n_embd(handle)
        self.num_layers: int = lib().llama_model_n_layer(handle)
        self.size_bytes: int = lib().llama_model_size(handle)
        self.num_params: int = lib().llama_model_n_params(handle)
        self.has_encoder: bool = bool(lib().llama_model_has_encoder(handle))
        # a recurrent (Mamba, RWKV) or hybrid (Jamba, Granite 4, LFM2...) model keeps a state per
        # sequence that cannot lose its last tokens: llama_memory_seq_rm refuses a partial removal
        self.is_recurrent: bool = bool(lib().llama_model_is_recurrent(handle))
        self.is_hybrid: bool = bool(lib().llama_model_is_hybrid(handle))
        v = self._vocab
        self.special = SpecialTokens(
            bos=lib().llama_vocab_bos(v), eos=lib().llama_vocab_eos(v), eot=lib().llama_vocab_eot(v),
            nl=lib().llama_vocab_nl(v), pad=lib().llama_vocab_pad(v),
            fim_pre=lib().llama_vocab_fim_pre(v), fim_suf=lib().llama_vocab_fim_suf(v),
            fim_mid=lib().llama_vocab_fim_mid(v),
            add_bos=bool(lib().llama_vocab_get_add_bos(v)), add_eos=bool(lib().llama_vocab_get_add_eos(v)))
        self._eog = frozenset(t for t in range(self.n_vocab) if lib().llama_vocab_is_eog(v, t))

    # -- lifetime ---------------------------------------------------------------------------
    @property
    def vocab(self) -> Any:
        self.check_open()
        return self._vocab

    def add_dependent(self, dependent: NativeHandle) -> None:
        """Close `dependent` (it points into this model) before the model is freed.

        Raises ClosedError when the model is already closed (or closing)."""
        with self._lock:
            if self._dependents is None:
                raise ClosedError("model is closed")
            self._dependents.add(dependent)

    def _on_close(self) -> None:
        if self._dependents is None:  # closed already, or __init__ failed before loading
            return
        with self._lock:  # from here on add_dependent refuses: nothing is added after the snapshot
            dependents, self._dependents = self._dependents, None
        for dependent in list(dependents or ()):
            dependent.close()

    # -- metadata ---------------------------------------------------------------------------
    def description(self) -> str:
        buf = ffi.new("char[]", 256)
        lib().llama_model_desc(self.handle, buf, 256)
        text: str = ffi.string(buf).decode("utf-8", "replace")
        return text

    def metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(lib().llama_model_meta_count(self.handle)):
            out[self._meta_str(lib().llama_model_meta_key_by_index, i)] = self._meta_str(
                lib().llama_model_meta_val_str_by_index, i)
        return out

    def _meta_str(self, fn: Any, i: int) -> str:
        size = 256
        while True:
            buf = ffi.new("char[]", size)
            n = fn(self.handle, i, buf, size)
            if n < size:
                return ffi.string(buf).decode("utf-8", "replace") if n >= 0 else ""
            size = n + 1

    def chat_template(self, name: str | None = None) -> str | None:
        ptr = lib().llama_model_chat_template(self.handle, name.encode() if name else ffi.NULL)
        return None if ptr == ffi.NULL else ffi.string(ptr).decode("utf-8", "replace")

    # -- vocabulary -------------------------------------------------------------------------
    def is_eog(self, token: int) -> bool:
        return token in self._eog

    @property
    def eog_tokens(self) -> frozenset[int]:
        return self._eog

    def tokenize(self, text: str | bytes, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        try:
            data = text.encode("utf-8") if isinstance(text, str) else text
        except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") that a JSON body can carry
            raise InvalidRequestError(f"the text is not valid Unicode: {exc.reason} at position {exc.start}",
                                      code="invalid_unicode") from None
        capacity = len(data) + 8
        while True:
            tokens = ffi.new("llama_token[]", capacity)
            n = lib().llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
            if n >= 0:
                return list(ffi.unpack(tokens, n))
            if -n <= capacity:  # pragma: no cover - defensive: llama.cpp overflow signal
                raise InvalidRequestError("text too long to tokenize")
            capacity = -n

    def check_tokens(self, tokens: list[int], param: str = "prompt") -> None:
        for t in tokens:
            if not 0 <= t < self.n_vocab:
                raise InvalidRequestError(f"token id {t} out of vocabulary (0..{self.n_vocab - 1})", param=param)

    def token_to_piece(self, token: int, *, special: bool = False) -> bytes:
        """The raw bytes of one token; may be part of a multi-byte UTF-8 character.

        Plain pieces are remembered: the engine thread asks for one per generated token."""
        if not special:
            piece = self._pieces.get(token)
            if piece is None:
                piece = self._pieces[token] = self._piece(token, False)
            return piece
        return self._piece(token, True)

    def piece_text(self, token: int) -> str | None:
        """The text of a token whose plain piece is complete, valid UTF-8; None for a piece that
        is part of a multi-byte character (or invalid). Remembered like token_to_piece."""
        try:
            return self._texts[token]
        except KeyError:
            pass
        try:
            text: str | None = self.token_to_piece(token).decode("utf-8")
        except UnicodeDecodeError:
            text = None
        self._texts[token] = text
        return text

    def _piece(self, token: int, special: bool) -> bytes:
        if not 0 <= token < self.n_vocab:
            raise InvalidRequestError(f"token id {token} out of vocabulary (0..{self.n_vocab - 1})")
        buf = ffi.new("char[]", 64)
        n = lib().llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ffi.new("char[]", -n)
            n = lib().llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
        piece: bytes = ffi.unpack(buf, n)
        return piece

    def detokenize(self, tokens: list[int], *, remove_special: bool = False, unparse_special: bool = False) -> str:
        self.check_tokens(tokens)
        arr = ffi.new("llama_token[]", tokens)
        capacity = max(16, len(tokens) * 8)
        while True:
            buf = ffi.new("char[]", capacity)
            n = lib().llama_detokenize(self.vocab, arr, len(tokens), buf, capacity, remove_special, unparse_special)
            if n >= 0:
                text: str = ffi.unpack(buf, n).decode("utf-8", "replace")
                return text
            capacity = -n

    def token_text(self, token: int) -> str:
        return self.token_to_piece(token, special=True).decode("utf-8", "replace")
