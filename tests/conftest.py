import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded-array caches go to a per-session temp dir, never the user's ~/.cache."""
    monkeypatch.setenv("EDGE_SVP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _threads():
    # OMP_NUM_THREADS, where set, says how many cores this run may use: more threads than
    # free cores make every matrix product wait on the others
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", min(2, os.cpu_count() or 1))))


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
