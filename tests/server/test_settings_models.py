"""Declaring several models: [[models]] tables, repeated --model flags, --models-dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from botframework.runtime.registry import KEEP_FOREVER, LoadPolicy
from botframework.server.settings import ServerSettings


def test_models_tables_beside_a_server_table(tmp_path: Path) -> None:
    config = tmp_path / "bf.toml"
    config.write_text('''
[server]
port = 8001
n_ctx = 2048

[[models]]
name = "chat"
source = "smollm2-135m-instruct"
aliases = ["gpt-4o-mini"]
load = "preload"
parallel = 4

[[models]]
name = "coder"
path = "/models/coder.gguf"
n_ctx = 4096
keep_alive = 300
sha256 = "ab"
''')
    settings = ServerSettings.from_args(config=config)
    chat, coder = settings.model_entries()
    assert settings.port == 8001
    assert (chat.name, chat.source, chat.aliases, chat.load) == ("chat", "smollm2-135m-instruct", ("gpt-4o-mini",),
                                                                 LoadPolicy.PRELOAD)
    assert chat.config.num_slots == 4 and chat.config.n_ctx == 2048 and chat.keep_alive_s == KEEP_FOREVER
    assert (coder.source, coder.config.n_ctx, coder.keep_alive_s, coder.load, coder.sha256) == (
        "/models/coder.gguf", 4096, 300.0, LoadPolicy.LAZY, "ab")


def test_a_bad_models_table_is_an_error_at_start(tmp_path: Path) -> None:
    config = tmp_path / "bf.toml"
    config.write_text('[[models]]\nname = "x"\nsource = "a.gguf"\ncolour = "blue"\n')
    with pytest.raises(ValueError, match="unknown key.*colour"):
        ServerSettings.from_args(config=config)
    config.write_text('[[models]]\nname = "x"\n')
    with pytest.raises(ValueError, match="needs a source"):
        ServerSettings.from_args(config=config)
    config.write_text('[[models]]\nsource = "a.gguf"\nload = "eager"\n')
    with pytest.raises(ValueError, match="preload"):
        ServerSettings.from_args(config=config)


def test_repeated_model_flags_and_a_models_dir(tmp_path: Path) -> None:
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    (tmp_path / "c.gguf").write_bytes(b"GGUF")
    (tmp_path / "notes.txt").write_text("not a model")
    settings = ServerSettings().replace(model=["smollm2-135m-instruct", str(tmp_path / "b.gguf")],
                                        models_dir=str(tmp_path), keep_alive_s=60)
    entries = settings.model_entries()
    assert [e.name for e in entries] == ["smollm2-135m-instruct", "b", "c"]  # b declared once
    assert [e.load for e in entries] == [LoadPolicy.PRELOAD, LoadPolicy.LAZY, LoadPolicy.LAZY]
    assert entries[2].keep_alive_s == 60 and settings.allowed_dirs == [tmp_path]
    single = ServerSettings().replace(model=["smollm2-135m-instruct"])
    assert single.model == "smollm2-135m-instruct" and len(single.model_entries()) == 1
    with pytest.raises(ValueError, match="not a folder"):
        ServerSettings().replace(models_dir=str(tmp_path / "missing"))


def test_environment_values_for_the_new_settings(tmp_path: Path) -> None:
    settings = ServerSettings.from_env({"BOTFRAMEWORK_MODELS_DIR": str(tmp_path), "BOTFRAMEWORK_KEEP_ALIVE_S": "30",
                                        "BOTFRAMEWORK_MEMORY_BUDGET_MB": "2048"})
    assert settings.models_dir == tmp_path and settings.keep_alive_s == 30.0
    assert settings.memory_budget_bytes() == 2048 << 20


def test_the_readme_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("### Several models", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    config = tmp_path / "models.toml"
    config.write_text(example)
    settings = ServerSettings.from_args(config=config)
    chat, coder = settings.model_entries()
    assert (chat.name, chat.aliases, chat.load, coder.name, coder.keep_alive_s) == (
        "chat", ("gpt-4o-mini",), LoadPolicy.PRELOAD, "coder", 300.0)
    assert settings.memory_budget_bytes() == 4096 << 20 and settings.allowed_dirs == [Path("/srv/models")]


def test_a_folder_with_several_quantizations_names_the_best_that_fits(tmp_path: Path) -> None:
    for name, size in (("qwen-1.5b-instruct-q4_k_m", 100), ("qwen-1.5b-instruct-q8_0", 180),
                       ("qwen-1.5b-instruct-f16", 340), ("other.Q4_0", 50)):
        (tmp_path / f"{name}.gguf").write_bytes(b"GGUF" + bytes(size << 10))
    entries = ServerSettings().replace(models_dir=str(tmp_path), memory_budget_mb=1).model_entries()
    aliases = {e.name: e.aliases for e in entries}
    # 1 MiB: the f16 (340 KiB x 1.25) fits too, so it is the best
    assert aliases["qwen-1.5b-instruct-f16"] == ("qwen-1.5b-instruct",)
    assert aliases["qwen-1.5b-instruct-q8_0"] == () and aliases["other.Q4_0"] == ()  # one quantization: no alias
    from botframework.runtime.registry import best_quantizations, gguf_files

    assert best_quantizations(gguf_files(tmp_path), 300 << 10)["qwen-1.5b-instruct"].stem.endswith("q8_0")
    assert best_quantizations(gguf_files(tmp_path), 10 << 10)["qwen-1.5b-instruct"].stem.endswith("q4_k_m")


def test_a_model_flag_replaces_the_configs_models(tmp_path: Path) -> None:
    config = tmp_path / "bf.toml"
    config.write_text('[[models]]\nname = "a"\nsource = "/m/a.gguf"\n')
    one = ServerSettings.from_args(config=config, model=["smollm2-135m-instruct"])
    assert [(e.name, e.load) for e in one.model_entries()] == [("smollm2-135m-instruct", LoadPolicy.PRELOAD)]
    assert [e.name for e in ServerSettings.from_args(config=config).model_entries()] == ["a"]


def test_a_model_named_only_by_a_load_request(tmp_path: Path) -> None:
    """POST /v1/models/{spec}/load may declare a .gguf inside the configured folders; no folders
    means no paths over HTTP; names that are neither a path nor the catalog's are unknown."""
    from botframework.errors import InvalidRequestError, ModelNotFoundError

    folder, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    for path in (folder / "coder.gguf", elsewhere / "coder.gguf"):
        path.write_bytes(b"GGUF" + bytes(60))
    settings = ServerSettings(models_dirs=(folder,), keep_alive_s=30)
    entry = settings.entry_for_load(str(folder / "coder.gguf"))
    assert entry.name == "coder" and entry.load is LoadPolicy.LAZY and entry.keep_alive_s == 30
    assert str(folder / "coder.gguf") in entry.aliases
    with pytest.raises(InvalidRequestError, match="outside"):
        settings.entry_for_load(str(elsewhere / "coder.gguf"))
    with pytest.raises(InvalidRequestError, match="--models-dir"):
        ServerSettings().entry_for_load(str(folder / "coder.gguf"))
    with pytest.raises(ModelNotFoundError):
        settings.entry_for_load("no-such-model")


def test_remote_model_tables(tmp_path: Path) -> None:
    config = tmp_path / "bf.toml"
    config.write_text('''
[[models]]
name = "big"
urls = ["http://gpu1:8000/v1", "http://gpu2:8000/v1"]
api_key = "k"
remote_model = "qwen2.5-7b"
timeout_s = 30
''')
    (entry,) = ServerSettings.from_env({}, config=config).model_entries()
    assert entry.remote is not None and entry.remote.urls == ("http://gpu1:8000/v1", "http://gpu2:8000/v1")
    assert (entry.remote.api_key, entry.remote.model, entry.remote.timeout_s) == ("k", "qwen2.5-7b", 30.0)
    assert entry.keep_alive_s == KEEP_FOREVER
    for bad, message in (('url = "gpu1:8000"', "http"), ('api_key = "k"\nsource = "x"', "needs 'url'")):
        config.write_text(f'[[models]]\nname = "big"\n{bad}\n')
        with pytest.raises(ValueError, match=message):
            ServerSettings.from_env({}, config=config)


def test_the_session_store_size_from_the_environment_and_per_model(tmp_path: Path) -> None:
    settings = ServerSettings.from_env({"BOTFRAMEWORK_SESSION_RAM_MB": "64"})
    assert settings.worker_config().session_ram_bytes == 64 << 20
    config = tmp_path / "bf.toml"
    config.write_text('[server]\nsession_ram_mb = 128\n\n[[models]]\nname = "a"\nsource = "a.gguf"\n\n'
                      '[[models]]\nname = "b"\nsource = "b.gguf"\nsession_ram_mb = 16\n')
    a, b = ServerSettings.from_args(config=config).model_entries()
    assert (a.config.session_ram_bytes, b.config.session_ram_bytes) == (128 << 20, 16 << 20)
    with pytest.raises(ValueError, match="session_ram_mb must be >= 0"):
        ServerSettings.from_env({"BOTFRAMEWORK_SESSION_RAM_MB": "-1"})
