"""Settings layering (file < env < flags) and the CLI's refusal to expose an open server."""

from __future__ import annotations

from pathlib import Path

import pytest

from botframework.cli import main
from botframework.server.settings import ServerSettings


def test_config_file_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "bf.toml"
    config.write_text('[server]\nport = 9001\nnum_slots = 3\napi_keys = ["k1"]\ncors_origins = ["http://a"]\n')
    s = ServerSettings.from_env({}, config=config)
    assert (s.port, s.num_slots, s.api_keys, s.cors_origins) == (9001, 3, ("k1",), ("http://a",))
    s = ServerSettings.from_env({"BOTFRAMEWORK_PORT": "9002", "BOTFRAMEWORK_CONFIG": str(config)})
    assert (s.port, s.num_slots) == (9002, 3)
    assert s.replace(port=9003, num_slots=None).port == 9003 and s.num_slots == 3


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ValueError, match="unknown setting"):
        ServerSettings.from_env({}, config=config)
    config.write_text("port = [\n")
    with pytest.raises(ValueError, match="cannot read config file"):
        ServerSettings.from_env({}, config=config)


def test_cli_refuses_open_public_bind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "refusing to bind" in capsys.readouterr().err
