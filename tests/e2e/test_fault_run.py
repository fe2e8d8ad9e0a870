"""The randomized fault run (bench/fault_run.py) at CI size: 200 clients, every kind of fault at
least once, and every invariant of bench/fault_invariants.py holds. `FAULT_RUN_DURATION` (seconds
of faults, 90 by default) and `FAULT_RUN_SEED` make it longer or another schedule; `-m "not
fault_run"` leaves it out."""

from __future__ import annotations

import logging
import os

import pytest

from bench.fault_run import FAULT_KINDS, RunConfig, run

pytestmark = [pytest.mark.e2e, pytest.mark.fault_run, pytest.mark.django_db(transaction=True)]

logger = logging.getLogger(__name__)

# Seconds of faults (the first round of the five kinds always runs whole).
DURATION = float(os.environ.get("FAULT_RUN_DURATION", "90"))
SEED = int(os.environ.get("FAULT_RUN_SEED", "18"))
CLIENTS = 200
# Start-up, the quiet period (at most 2 × 120 s) and the stop come on top of the faults.
TIMEOUT = DURATION + 360


@pytest.mark.timeout(TIMEOUT)
def test_a_randomized_fault_run_loses_duplicates_and_leaks_nothing(e2e_database_url, tmp_path):
    report = run(RunConfig(seed=SEED, duration=DURATION, clients=CLIENTS, database_url=e2e_database_url,
                           log_dir=tmp_path))
    logger.info("fault run:\n%s", report.summary())
    assert report.violations == [], report.summary()
    assert all(report.faults[kind] >= 1 for kind in FAULT_KINDS), report.summary()
    assert report.clients == CLIENTS
    assert report.acknowledged > 0
