"""Shared pytest configuration: Hypothesis profiles."""

import os

from hypothesis import HealthCheck, settings

# A fast default for the edit-test loop and a thorough profile that CI selects.
settings.register_profile("fast", max_examples=60, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
