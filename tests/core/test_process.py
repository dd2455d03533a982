"""app/core/process.py: the server's malloc arena cap, in a fresh interpreter each (it is process-wide)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = "from app.core.process import limit_malloc_arenas; print(limit_malloc_arenas())"


def run(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env_extra
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the cap is glibc's mallopt")
def test_the_cap_is_set_on_glibc_unless_the_environment_sets_one():
    assert run({}) == "True"
    assert run({"MALLOC_ARENA_MAX": "4"}) == "False"  # the user's own setting wins
