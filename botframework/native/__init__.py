"""L0: thin, safe wrappers over the cffi module. Each wrapper owns its native pointer.

    _bf_ffi (compiled, API mode)  ->  _lib (load once, backend init, logs)
        -> Model, Context, Batch, SamplerChain, KVMemory, shim (JSON in/out)
        -> logits: a decode's logits as zero-copy numpy views (logits_view, outputs_view)

docs/low-level.md is the guide to this layer (a decode loop over many sequences, logits,
sampling, KV sequence operations, state, the exceptions each misuse raises).

Every owner is a _owned.NativeHandle: close() (idempotent, also on `with` exit and __del__),
then ClosedError on use. Closing a Model closes the contexts and grammar samplers built on it.

Nothing here makes policy decisions; the engine and scheduler above do. The wrappers load on
first use (PEP 562), so that `import botframework.native.<module>` of a pure module, and the
layers above that only name these types, work without the compiled module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botframework.native.batch import Batch
    from botframework.native.context import Context, ContextParams
    from botframework.native.kv_memory import KVMemory
    from botframework.native.model import Model, ModelParams
    from botframework.native.sampler import SamplerChain
    from botframework.specs import SamplerSpec

_WHERE = {
    "Batch": "batch", "Context": "context", "ContextParams": "context", "KVMemory": "kv_memory",
    "Model": "model", "ModelParams": "model", "SamplerChain": "sampler",
}


def __getattr__(name: str) -> Any:
    if name == "SamplerSpec":  # plain data: it lives in botframework.specs
        from botframework.specs import SamplerSpec

        return SamplerSpec
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'botframework.native' has no attribute {name!r}")
    return getattr(importlib.import_module(f"botframework.native.{module}"), name)


__all__ = [
    "Batch", "Context", "ContextParams", "KVMemory", "Model", "ModelParams",
    "SamplerChain", "SamplerSpec",
]
