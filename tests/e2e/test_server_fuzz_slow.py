"""schemathesis against the real server and model (slow: `pytest -m slow`).

tests/server/test_schemathesis.py fuzzes the HTTP layer over a fake runtime in every run; this
one sends 3,000 generated requests through the real engine too (grammars, schemas, token ids,
sessions), with max_tokens capped at 16 so that generations stay short. No 5xx, and the server
process never dies.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from server_proc import free_port, served

pytestmark = pytest.mark.slow


_PORT = free_port()
_BASE = f"http://127.0.0.1:{_PORT}"


@pytest.fixture(scope="module")
def server() -> Iterator[subprocess.Popen[bytes]]:
    with served(["--parallel", "4", "--ctx-size", "2048", "--log-level", "warning"],
                env={"BOTFRAMEWORK_MAX_TOKENS_CAP": "16"}, port=_PORT) as (_, proc):
        yield proc


def test_real_server_never_answers_5xx(server: subprocess.Popen[bytes]) -> None:
    api = schemathesis.openapi.from_url(f"{_BASE}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) > 10

    @settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate], database=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        operation = data.draw(st.sampled_from(operations))
        case = data.draw(operation.as_strategy())
        response = case.call(base_url=_BASE, timeout=120)
        assert response.status_code < 500, \
            f"{case.method} {case.path}: {response.status_code} {response.text[:300]} body={str(case.body)[:300]}"
        assert server.poll() is None, "the server died"

    check()
