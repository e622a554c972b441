"""Killed runs: `edge-svp fit` in a subprocess is SIGKILLed at chosen points (training,
checkpoint writing, cache writing, between renames, at epoch and block boundaries), then
resumed to completion. It must end bit for bit like a straight run, lose nothing that was
checkpointed, and leave a run directory that `edge-svp eval` can read at every moment.

The points come from EDGE_SVP_KILL_AT (edge_svp/faults.py); the killed runs are children
forked from one interpreter (tests/fork_runs.py), so that they pay for importing torch once.
Ctrl-C and SIGTERM are real signals to a real `python -m edge_svp fit`."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny_runs import TINY_ARGS, Warnings, assert_same_run, full_disk_pwrite, metrics

from edge_svp import faults
from edge_svp.checkpoint import LATEST, CheckpointStore
from edge_svp.cli import main
from edge_svp.run import evaluate_run, fit

# layerwise with every activation cache on disk: 2 blocks, 7 steps an epoch, 2 epochs,
# a checkpoint every 3 steps, after each epoch and at each block boundary
LAYERWISE_ON_DISK = ["--schedule", "layerwise", "--host-budget", "1"]

# point: (EDGE_SVP_KILL_AT, where the resumed run goes on from; None: not checked)
KILLS = {
    "mid-epoch": ("step:5", "block 1, epoch 1, step 3"),  # after a periodic checkpoint
    "checkpoint-write": ("checkpoint-write:340", None),  # the second checkpoint half written
    "cache-write": ("cache-write:3", "block 1, end of epoch 2"),  # block 1's train cache
    "between-renames": ("checkpoint-rename:3", "block 1, epoch 1, step 6"),  # latest gone
    "block-boundary": ("stage:1", "end of block 1"),  # block 2 reopens block 1's caches
    "before-epoch-checkpoint": ("epoch:3", "block 2, epoch 1, step 7"),  # a metrics line ahead
}
FINAL_FILES = {"config.toml", "plan.json", "metrics.jsonl", "summary.json", "checkpoints.json",
               "checkpoint.pt", "checkpoint.prev.pt"}  # fmt: skip


FORK_RUNS = Path(__file__).with_name("fork_runs.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def fit_args(out) -> list[str]:
    return ["fit", *TINY_ARGS, *LAYERWISE_ON_DISK, "--out", str(out)]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A straight run, a run killed at each point (all at once: they are independent), and
    one resumed run killed again."""
    root = tmp_path_factory.mktemp("killed")
    plan = {
        "first": fit_args(root / "straight"),
        "groups": [
            [[name, kill_at, fit_args(root / name)] for name, (kill_at, _) in KILLS.items()]
            + [["chain", "step:5", fit_args(root / "chain")]],
            [["chain-again", "cache-write:10", ["fit", "--resume", str(root / "chain")]]],
        ],
    }
    runs = subprocess.run(
        [sys.executable, str(FORK_RUNS), json.dumps(plan)],
        env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert runs.returncode == 0, runs.stderr
    killed = {name: -signal.SIGKILL for name in [*KILLS, "chain", "chain-again"]}
    assert json.loads(runs.stdout) == {"first": 0, **killed}, runs.stderr
    return root


def resume_and_check(run, straight) -> tuple[dict, list[str]]:
    """Resume `run` to the end: the same run as `straight`, nothing left behind, readable."""
    warnings = Warnings()
    summary = fit(resume=run, reporter=warnings)
    assert_same_run(run, straight)
    assert {p.name for p in run.iterdir()} == FINAL_FILES  # no cache, no temporary file left
    result = CliRunner().invoke(main, ["eval", str(run), "--json"])
    assert json.loads(result.output)["test_accuracy"] == summary["test_accuracy"]
    return summary, warnings.lines


@pytest.mark.parametrize("name", list(KILLS))
def test_a_killed_run_resumes_and_ends_like_a_straight_run(killed, name, tmp_path):
    run = tmp_path / name
    shutil.copytree(killed / name, run)
    # nothing checkpointed is lost, and the directory reads as it is
    records = CheckpointStore(run).read(Warnings().warning)["training"]["records"]
    done = [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    assert done == metrics(killed / "straight")[: len(done)]
    assert evaluate_run(run)["test_accuracy"] is not None
    if name == "checkpoint-write":
        assert (run / (LATEST + ".tmp")).exists()  # killed while writing it
    summary, warnings = resume_and_check(run, killed / "straight")
    if KILLS[name][1]:
        assert summary["resumed_from"] == KILLS[name][1]
    missing = "checkpoint.pt is missing: using the previous good checkpoint checkpoint.prev.pt"
    assert warnings == ([missing] if name == "between-renames" else [])


def test_a_corrupt_checkpoint_is_detected_and_the_previous_one_used(killed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(killed / "cache-write", run)
    data = bytearray((run / LATEST).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / LATEST).write_bytes(bytes(data))
    summary, warnings = resume_and_check(run, killed / "straight")
    assert warnings == [
        "checkpoint.pt fails its checksum (truncated or corrupt): using the previous good "
        "checkpoint checkpoint.prev.pt"
    ]
    assert summary["resumed_from"] == "block 1, epoch 2, step 5"  # the one before


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cache_file_is_detected_and_rebuilt(killed, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(killed / "block-boundary", run)
    cache = run / "cache" / "block1-train.bin"
    data = bytearray(cache.read_bytes())
    if damage == "flip":
        data[100] ^= 0x01
    cache.write_bytes(bytes(data if damage == "flip" else data[:-7]))
    _, warnings = resume_and_check(run, killed / "straight")
    reason = "fails its checksum" if damage == "flip" else "is truncated"
    assert len(warnings) == 1 and f"block1-train.bin {reason}" in warnings[0]
    assert "rebuilding the input caches of block 2" in warnings[0]


def test_a_resumed_run_killed_again_still_ends_like_a_straight_run(killed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(killed / "chain", run)  # killed at step 5, then again in block 1's test cache
    summary, _ = resume_and_check(run, killed / "straight")
    assert summary["resumed_from"] == "block 1, end of epoch 2"


def test_a_run_killed_after_its_last_checkpoint_only_writes_its_summary(killed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(killed / "straight", run)
    (run / "summary.json").unlink()  # killed between the final checkpoint and the summary
    summary, _ = resume_and_check(run, killed / "straight")
    assert summary["resumed_from"] == "end of block 2"


def test_a_full_disk_while_caching_leaves_a_resumable_run(killed, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr("edge_svp.memory.activation_cache.os.pwrite", full_disk_pwrite)
    result = CliRunner().invoke(main, fit_args(run))
    assert result.exit_code == 3 and "No space left on device" in result.stderr
    monkeypatch.undo()  # space again
    summary, _ = resume_and_check(run, killed / "straight")
    assert summary["resumed_from"] == "block 1, end of epoch 2"  # the cache is written again


def start_training(out: Path) -> subprocess.Popen:
    """A fit into `out` in a process of its own, long enough to be stopped while it trains,
    returned once its first epoch is done."""
    command = [sys.executable, "-m", "edge_svp", "fit", *TINY_ARGS, "--epochs", "200"]
    process = subprocess.Popen(
        [*command, "--out", str(out)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    for line in process.stdout:
        if line.startswith("block"):
            break
    return process


@pytest.mark.parametrize(
    "sent, code, said",
    [(signal.SIGINT, 130, "stopped at "), (signal.SIGTERM, 143, "stopped by SIGTERM at ")],
)
def test_ctrl_c_or_sigterm_finishes_the_step_checkpoints_and_says_how_to_resume(
    tmp_path, sent, code, said
):
    """Ctrl-C, or SIGTERM as systemd, Docker and job schedulers send it."""
    out = tmp_path / "run"
    process = start_training(out)
    process.send_signal(sent)
    _, err = process.communicate(timeout=300)
    assert process.returncode == code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith(f"edge-svp: interrupted: {said}")
    assert err.rstrip().endswith(f"checkpoint saved; resume with: edge-svp fit --resume {out}")
    checkpoint = CheckpointStore(out).read()
    stopped = checkpoint["training"]["position"]
    assert 1 <= stopped["epoch"] < 200 and not (out / "summary.json").exists()
    assert evaluate_run(out)["test_accuracy"] is not None


# layerwise, two blocks of two epochs of two steps, a checkpoint after each epoch
SHORT = [*fit_args("RUN")[:-2], "--train-limit", "64", "--set", "train.checkpoint_every=0"]
WRITES = 28  # config, plan, metrics, lines, checkpoints and digests, weights that wait on disk


def short_fit(out: Path) -> list[str]:
    return [*SHORT, "--out", str(out)]


@pytest.fixture(scope="module")
def short_straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("short") / "straight"
    assert CliRunner().invoke(main, short_fit(out)).exit_code == 0
    return out


@pytest.mark.parametrize("write", range(1, WRITES + 2))
def test_a_full_disk_at_any_write_is_one_line_and_the_run_goes_on(
    short_straight, write, tmp_path, monkeypatch
):
    """ENOSPC at each file the run writes in turn: one line, exit 3 (training stopped, with
    the command that continues it) or 2 (nothing to continue yet), no temporary file, the
    last good checkpoint kept; then, with space again, the run ends like a straight one."""
    run = tmp_path / "run"
    monkeypatch.setattr(faults, "_passed", {})
    monkeypatch.setenv(faults.FULL_DISK_ENV, f"write:{write}")
    result = CliRunner().invoke(main, short_fit(run))
    monkeypatch.delenv(faults.FULL_DISK_ENV)
    if write > WRITES:  # every write is counted: one more fails none
        assert result.exit_code == 0, result.output
        return
    (line,) = result.stderr.splitlines()
    assert line.startswith("edge-svp: error: cannot write ") and "no space left on device" in line
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    if CheckpointStore(run).read() is not None:  # the last good one is whole
        assert CheckpointStore(run).read()["training"] is not None
    resume = re.search(r"then continue with: edge-svp (fit --resume .*)$", line)
    assert result.exit_code == (3 if resume else 2), line
    again = resume.group(1).split() if resume else short_fit(run)
    result = CliRunner().invoke(main, again)
    assert result.exit_code == 0, result.output
    assert_same_run(run, short_straight)
    assert {p.name for p in run.iterdir()} == FINAL_FILES


def test_a_second_fit_into_a_run_that_trains_in_another_process_is_refused(tmp_path):
    """Two --overwrite fits, or a resume beside a fit, would interleave their checkpoints:
    the run directory's lock refuses the second in one line, and the first trains on."""
    out = tmp_path / "run"
    process = start_training(out)  # its run directory locked
    try:
        for second in (["fit", *TINY_ARGS, "--out", str(out), "--overwrite"],
                       ["fit", "--resume", str(out)]):  # fmt: skip
            result = CliRunner().invoke(main, second)
            assert result.exit_code == 2, result.output
            assert "is in use by another edge-svp process" in result.stderr
        assert process.poll() is None  # the first one trains on
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert CheckpointStore(out).read()["training"] is not None  # the first one's, whole
