"""The public surface: what each public package exports is deliberate, resolvable and ours.

Public: the `__all__` of the packages in PUBLIC (the low-level ones are for people who build
their own sampling and batching on top of the engine and scheduler). Everything else is
internal and may change between releases; modules whose names start with `_` are private.
"""

from __future__ import annotations

import importlib

import pytest

import botframework

# The top level: a change here is an API change, so it is spelled out.
TOP_LEVEL = {
    "APIStatusError", "AsyncClient", "AsyncSession", "AuthenticationError", "Client", "ServerUnavailableError",
    "Session",
    "BotframeworkError", "BusyError", "CancelledError", "ChatResult", "ClosedError", "CompletionResult",
    "ContextLengthExceededError", "GenerationResult", "GrammarError", "InvalidRequestError", "LocalLLM",
    "ModelError", "ModelFetchError", "ModelLoadError", "ModelNotFoundError", "NativeError", "OutputValidationError",
    "UnsupportedSchemaError",
}
PUBLIC = ["botframework", "botframework.errors", "botframework.specs", "botframework.config", "botframework.native",
          "botframework.engine", "botframework.scheduler", "botframework.chat", "botframework.server",
          "botframework.client", "botframework.session"]
# names that need the compiled module to resolve (loaded on first use)
NATIVE_NAMES = {"LocalLLM", "ChatResult", "CompletionResult", "GenerationResult", "Batch", "Context",
                "ContextParams", "KVMemory", "Model", "ModelParams", "SamplerChain", "Engine"}


def test_the_top_level_exports_exactly_the_documented_names() -> None:
    assert set(botframework.__all__) == TOP_LEVEL
    assert len(botframework.__all__) == len(set(botframework.__all__))


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_package_declares_what_it_exports(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    for attr in exported:
        assert not attr.startswith("_"), f"{name} exports a private name {attr}"
        if attr in NATIVE_NAMES:
            continue  # resolved in the test below, with the build
        assert hasattr(module, attr), f"{name}.__all__ lists {attr}, which it does not have"
        value = getattr(module, attr)
        origin = getattr(value, "__module__", None) or name
        assert origin.startswith("botframework"), f"{name}.{attr} comes from {origin}: re-export only our own names"
        assert not any(part.startswith("_") for part in origin.split(".")), \
            f"{name}.{attr} is defined in the private module {origin}"


@pytest.mark.native
def test_names_loaded_on_first_use_resolve_with_the_build() -> None:
    for name in PUBLIC:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            if attr in NATIVE_NAMES:
                assert getattr(module, attr) is not None


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from botframework.scheduler import *", namespace)  # noqa: S102 - our own module
    assert {k for k in namespace if not k.startswith("__")} == set(importlib.import_module("botframework.scheduler").__all__)


def test_no_public_package_exports_the_raw_layer() -> None:
    """The cffi module stays behind the wrappers (never star-exported, as DESIGN.md says)."""
    for name in PUBLIC:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            assert attr not in {"ffi", "lib", "_lib", "_bf_ffi"}, f"{name} exports the raw layer ({attr})"
