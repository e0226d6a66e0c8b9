"""benchmarks/gpu_acceptance.py's time keeping: the run's budget cuts each check's limit, and a
check that runs out of time is stopped with SIGTERM first, so what it measured is kept. (The
whole script runs on the CPU in tests/workflow/test_workflow.py.)"""

from __future__ import annotations

import sys
import time

import pytest
from conftest import benchmark_module


@pytest.fixture(scope="module")
def acceptance():
    return benchmark_module("gpu_acceptance")


def test_the_budget_cuts_each_limit_to_what_is_left(acceptance):
    assert acceptance.Budget(None).left(120) == 120
    budget = acceptance.Budget(50)
    assert budget.left(120) in (49, 50) and budget.left(10) == 10
    budget.end = time.monotonic() - 5  # spent: a check still gets a second, and then fails on time
    assert budget.left(120) == 1


def test_a_check_out_of_time_gets_sigterm_and_keeps_what_it_wrote(acceptance):
    child = ("import signal, sys, time\n"
             "def stop(*_):\n"
             "    print('partial table', flush=True); sys.exit(3)\n"
             "signal.signal(signal.SIGTERM, stop)\n"
             "print('started', flush=True)\n"
             "time.sleep(60)\n")
    started = time.monotonic()
    code, out = acceptance.run_stopped_by_sigterm([sys.executable, "-c", child], timeout=2)
    assert code == 124 and "started" in out and "partial table" in out and "stopped after 2 s" in out
    assert time.monotonic() - started < 20
    code, out = acceptance.run_stopped_by_sigterm([sys.executable, "-c", "print('done')"], timeout=30)
    assert (code, out.strip()) == (0, "done")


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(acceptance):
    child = ("import signal, time\n"
             "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
             "print('up', flush=True)\n"
             "time.sleep(60)\n")
    started = time.monotonic()
    code, out = acceptance.run_stopped_by_sigterm([sys.executable, "-c", child], timeout=2, grace=1)
    assert code == 124 and "up" in out and time.monotonic() - started < 20
