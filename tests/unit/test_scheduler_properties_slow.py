"""The scheduler's property tests, with 20x the examples (`pytest -m slow`, run by CI).

The default run's 150-200 examples once missed, for weeks, the case that a prefill could cut
a running answer short (CUT_SHORT_BY_A_PREFILL in test_scheduler.py): these reruns search
further. BOTFRAMEWORK_PROPERTY_EXAMPLES sets the number of examples.
"""

from __future__ import annotations

import os

import pytest
import test_scheduler
from hypothesis import HealthCheck, given, settings
from test_scheduler import PREFIX_RAM_REQUESTS, RANDOM_OPS

EXAMPLES = int(os.environ.get("BOTFRAMEWORK_PROPERTY_EXAMPLES", "3000"))
LONG = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

pytestmark = pytest.mark.slow


@LONG
@given(*PREFIX_RAM_REQUESTS)
def test_prefix_ram_changes_no_output_long(requests: list, num_slots: int, num_ctx: int) -> None:  # type: ignore[type-arg]
    test_scheduler.test_prefix_ram_changes_no_output.hypothesis.inner_test(requests, num_slots, num_ctx)  # type: ignore[attr-defined]


@LONG
@given(*RANDOM_OPS)
def test_random_add_cancel_step_long(ops: list, num_slots: int, budget: int, prefix_ram: int) -> None:  # type: ignore[type-arg]
    test_scheduler.test_random_add_cancel_step.hypothesis.inner_test(ops, num_slots, budget, prefix_ram)  # type: ignore[attr-defined]
