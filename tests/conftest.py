"""Shared pytest configuration: Hypothesis profiles, a stand-in for Graphviz's dot."""

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# A fast default for the edit-test loop and a thorough profile that CI selects.
settings.register_profile("fast", max_examples=60, deadline=None)
# This replaces Hypothesis's own "ci" profile, so each choice of it is made here.
# No deadline and no too_slow check: CI shares a busy machine. New examples on each
# run (not derandomized): a failure is a real bug found, and print_blob puts the
# @reproduce_failure line for it in the log. No example database: a CI run depends
# on no earlier run, not even one left in a developer's checkout by `bash .ci/run`.
settings.register_profile(
    "ci",
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
    database=None,
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.fixture
def fake_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Put a ``dot`` on PATH (alone) that runs the given shell script body instead."""

    def install(body: str) -> None:
        directory = tmp_path / "fake-dot"
        directory.mkdir(exist_ok=True)
        dot = directory / "dot"
        dot.write_text(f"#!/bin/sh\n{body}\n")
        dot.chmod(0o755)
        monkeypatch.setenv("PATH", str(directory))

    return install
