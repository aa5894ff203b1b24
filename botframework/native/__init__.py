"""L0: thin, safe wrappers over the cffi module. Each wrapper owns its native pointer.

    _bf_ffi (compiled, API mode)  ->  _lib (load once, backend init, logs)
        -> Model, Context, Batch, SamplerChain, KVMemory, shim (JSON in/out)

Nothing here makes policy decisions; the engine and scheduler above do.
"""

from botframework.native.batch import Batch
from botframework.native.context import Context, ContextParams
from botframework.native.kv_memory import KVMemory
from botframework.native.model import Model, ModelParams
from botframework.native.sampler import SamplerChain, SamplerSpec

__all__ = [
    "Batch", "Context", "ContextParams", "KVMemory", "Model", "ModelParams",
    "SamplerChain", "SamplerSpec",
]
