"""Draft-model settings: --draft ngram|model|none, --draft-model SPEC, a [[models]] table's
draft_model; how each model's WorkerConfig comes out (no model is loaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from botframework.cli import build_parser
from botframework.server.settings import ServerSettings


def test_draft_model_flag_reaches_every_worker_config() -> None:
    s = ServerSettings().replace(draft="model", draft_model="smollm2-135m-instruct")
    config = s.worker_config()
    assert (config.speculative, config.draft_model) == ("model", "smollm2-135m-instruct")
    [entry] = s.model_entries()
    assert entry.config.draft_model == "smollm2-135m-instruct" and entry.config.speculative == "model"
    # without --draft model the draft model serves only requests that ask ("speculative": true)
    config = ServerSettings().replace(draft_model="smollm2-135m-instruct").worker_config()
    assert (config.speculative, config.draft_model) == ("none", "smollm2-135m-instruct")


def test_draft_model_needs_a_model() -> None:
    with pytest.raises(ValueError, match="draft 'model' needs a draft model"):
        ServerSettings().replace(draft="model")
    with pytest.raises(ValueError, match="draft must be"):
        ServerSettings().replace(draft="eagle")


def test_models_tables_name_their_own_draft_model(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('draft = "model"\n'
                      '[[models]]\nsource = "big"\nname = "big"\ndraft_model = "small.gguf"\n'
                      '[[models]]\nsource = "other"\nname = "other"\n'
                      '[[models]]\nsource = "emb"\nname = "emb"\nkind = "embedding"\ndraft_model = "small.gguf"\n')
    s = ServerSettings.from_env({}, config=config)
    by_name = {entry.name: entry.config for entry in s.model_entries()}
    assert (by_name["big"].draft_model, by_name["big"].speculative) == ("small.gguf", "model")
    assert (by_name["other"].draft_model, by_name["other"].speculative) == (None, "none")  # nothing to draft with
    assert (by_name["emb"].draft_model, by_name["emb"].speculative) == (None, "none")
    config.write_text('draft = "ngram"\ndraft_model = "small.gguf"\n'
                      '[[models]]\nsource = "big"\nname = "big"\ndraft_model = ""\n')
    [entry] = ServerSettings.from_env({}, config=config).model_entries()
    assert (entry.config.draft_model, entry.config.speculative) == (None, "ngram")


def test_serve_flags_parse() -> None:
    args = build_parser().parse_args(["serve", "--draft", "model", "--draft-model", "tiny.gguf"])
    assert (args.draft, args.draft_model) == ("model", "tiny.gguf")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--draft", "eagle"])


def test_draft_model_from_the_environment() -> None:
    s = ServerSettings.from_env({"BOTFRAMEWORK_DRAFT": "model", "BOTFRAMEWORK_DRAFT_MODEL": "tiny.gguf"})
    assert s.worker_config().draft_model == "tiny.gguf"
