"""bench/gpu_check.sh refuses bad input in one line before it starts anything: on a lent CUDA
machine a typo must not cost a run."""

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def refusal(*args: str) -> str:
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A folder shaped like one --prepare makes."""
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar10-jpg.zip").touch()
    return tmp_path


def test_unknown_device(data):
    assert refusal("--device", "gpu", str(data)) == (
        "gpu_check.sh: error: --device takes cuda or cpu, not 'gpu'"
    )


def test_folder_not_prepared(tmp_path):
    assert refusal(str(tmp_path)) == (
        f"gpu_check.sh: error: {tmp_path} is not a folder made by --prepare"
    )


def test_unknown_step(data):
    line = refusal("--device", "cpu", str(data), "depth", "frontiers")
    assert line.startswith("gpu_check.sh: error: no step 'frontiers' (steps: epoch-time suite")
