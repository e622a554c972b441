import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config):
    """Decoded-array caches go to one temporary folder for the whole session (a dataset is
    decoded once, then shared by the tests), never to the user's ~/.cache: set before any
    fixture, module-scoped ones and the environments of subprocesses included."""
    config.edge_svp_cache = tempfile.mkdtemp(prefix="edge-svp-test-cache-")
    os.environ["EDGE_SVP_CACHE"] = config.edge_svp_cache


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "edge_svp_cache", ""), ignore_errors=True)


@pytest.fixture(autouse=True)
def _threads():
    # OMP_NUM_THREADS, where set, says how many cores this run may use: more threads than
    # free cores make every matrix product wait on the others
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", min(2, os.cpu_count() or 1))))


@pytest.fixture(scope="session")
def tiny_run() -> tuple[str, ...]:
    """`edge-svp fit` options of a tiny digits run (tests/tiny_runs.py); a test adds its own."""
    from tiny_runs import TINY_RUN

    return TINY_RUN


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist").exists():
        pytest.skip(f"shared benchmark data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def evaluate_run():
    """`edge-svp eval RUN_DIR --json` as a dict, and the run's own summary.json, to compare."""

    def run(run_dir: Path) -> tuple[dict, dict]:
        from edge_svp.cli import main

        result = CliRunner().invoke(main, ["eval", str(run_dir), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output), json.loads((run_dir / "summary.json").read_text())

    return run
