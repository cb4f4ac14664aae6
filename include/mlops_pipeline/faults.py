"""Pause points for the process-death tests: a step holds still at a named point so a test can kill it there.

`MLOPS_FAULT_PAUSE=<point>` makes :func:`pause_point` at that point sleep (up to
`MLOPS_FAULT_PAUSE_SECONDS`, 600 by default) instead of returning. A test starts one Celery worker
with it, waits until the task has reached the point (its effects are visible in the store or
MLflow), and SIGKILLs the worker: the kill then lands at a known place in the task, not wherever a
race puts it. Never set in production; unset, a pause point is one environment read.

(:func:`mlops_pipeline.steps.fault_point` raises instead of pausing: for failures a task survives.)
"""

from __future__ import annotations

import logging
import os
import time

from mlops_pipeline.settings import FAULT_PAUSE_VAR, fault_pause_requested

log = logging.getLogger(__name__)

PAUSE_SECONDS_VAR = "MLOPS_FAULT_PAUSE_SECONDS"
# Bounded: a paused task that nobody kills carries on (and a forgotten setting costs minutes, not a hang).
DEFAULT_PAUSE_SECONDS = 600.0


def pause_point(name: str) -> None:
    """Sleep here when the environment asks for a pause at `name` (tests only); else return at once."""
    if fault_pause_requested() != name:
        return
    seconds = float(os.environ.get(PAUSE_SECONDS_VAR) or DEFAULT_PAUSE_SECONDS)
    # The test looks for this line in the task's log as well as for the point's effects.
    log.warning("paused at %s for up to %.0f s (%s)", name, seconds, FAULT_PAUSE_VAR)
    time.sleep(seconds)
