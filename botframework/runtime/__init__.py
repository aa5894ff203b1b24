"""L2 runtime: where models come from, and (later) the registry of loaded models.

    spec ("smollm2-135m-instruct" | "hf:owner/repo/file.gguf" | "/path/model.gguf")
      │ resolve_model(spec, allowed_dirs=..., pull_missing=...)
      ▼
    catalog.CATALOG ── pull.pull(name) ──► <cache>/models/<file>.gguf   (sha256-verified)
    huggingface_hub ── pull.pull("hf:...") ► <cache>/hf/...
    local path ──────── checked: exists, regular file, GGUF magic, inside allowed_dirs
      │
      ▼
    Path handed to the engine to load

Import from the submodules (`from botframework.runtime.pull import pull`): re-exporting the
function `pull` here would shadow the module `botframework.runtime.pull`, and patching
`botframework.runtime.pull._pip_download` would then silently hit the wrong object.
"""
