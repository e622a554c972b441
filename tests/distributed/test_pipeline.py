"""Pipelines of real processes on localhost (gloo), on a small digits MLP."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from tiny_runs import TINY_RUN

from edge_svp.cli import main

EXAMPLE_BYTES = 32 * 4 + 8  # a block output of 32 floats and its label


def fit(*args):
    """`edge-svp fit` of the tiny run (tests/tiny_runs.py; 200 examples, 7 steps an epoch)."""
    return CliRunner().invoke(main, ["fit", *TINY_RUN, *args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A single-process joint run and a 2-rank pipeline of the same configuration, one
    thread each, so that both compute with the same kernels."""
    out = tmp_path_factory.mktemp("pipeline")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        try:
            joint = fit("--out", str(out / "joint"))
        finally:
            torch.set_num_threads(threads)
        pipeline = fit("--nproc", "2", "--out", str(out / "pipeline"))
    assert joint.exit_code == 0, joint.output
    assert pipeline.exit_code == 0, pipeline.output
    return out / "joint", out / "pipeline"


def test_two_rank_pipeline_computes_exactly_what_joint_training_does(runs):
    joint, pipeline = (torch.load(d / "checkpoint.pt", weights_only=True) for d in runs)
    assert list(pipeline["state_dict"]) == list(joint["state_dict"])
    for name, tensor in joint["state_dict"].items():
        assert torch.equal(pipeline["state_dict"][name], tensor), name
    for key in ("config", "preprocess", "classes", "input_shape"):
        assert pipeline[key] == joint[key]
    records = [[json.loads(line) for line in open(d / "metrics.jsonl")] for d in runs]
    assert [{**r, "seconds": 0} for r in records[1]] == [{**r, "seconds": 0} for r in records[0]]


def test_a_pipelined_summary_has_the_schema_of_a_single_process_one(runs):
    joint, pipeline = (json.loads((d / "summary.json").read_text()) for d in runs)
    assert set(pipeline) == set(joint) | {"pipeline"}
    assert set(pipeline["memory"]) == set(joint["memory"])
    assert pipeline["bad_batches"] == joint["bad_batches"] == 0


def test_pipeline_run_directory_and_traffic(runs):
    _, pipeline = runs
    summary = json.loads((pipeline / "summary.json").read_text())
    assert summary["schedule"] == "pipelined"
    pipe = summary["pipeline"]
    assert (pipe["processes"], pipe["stages"], pipe["replicas"]) == (2, 2, 1)
    assert pipe["stage_blocks"] == [[1, 1], [2, 2]]
    # rank 0 sends every training example's block-1 output and label to rank 1, once
    steps = -(-200 // 32)
    assert pipe["activation_bytes_per_step"] == round(200 * EXAMPLE_BYTES / steps)
    assert pipe["allreduce_bytes_per_step"] == 0
    assert pipe["train_samples_per_second"] > 0
    assert len(summary["memory"]["measured_peak_bytes"]) == 2
    assert (pipeline / "config.toml").exists()


def test_a_pipelined_run_resumes_only_as_a_pipeline_of_its_own_layout(runs, tmp_path):
    run = tmp_path / "stopped"
    shutil.copytree(runs[1], run)
    (run / "summary.json").unlink()  # as a run stopped by SIGTERM or Ctrl-C leaves it
    for given in ([], ["--nproc", "2", "--stages", "1"]):
        result = CliRunner().invoke(main, ["fit", "--resume", str(run), *given])
        assert result.exit_code == 2, result.output
        assert result.stderr == (
            f"edge-svp: error: {run} was trained as a pipeline of 2 processes in 2 stage(s); "
            f"resume it so: edge-svp fit --resume {run} --nproc 2 --stages 2\n"
        )
    evaluated = CliRunner().invoke(main, ["eval", str(run), "--json"])  # its last epoch
    assert evaluated.exit_code == 0 and "end of epoch 2" in evaluated.stderr


def test_a_pipeline_killed_mid_epoch_resumes_to_what_it_would_have_computed(
    runs, tmp_path, monkeypatch
):
    """Rank 1 is killed in epoch 2 (7 steps an epoch); the resumed run goes on from the
    checkpoint of epoch 1 with every rank's optimizer, schedule, RNG and data order, and
    ends with the weights and records of the run that was never stopped."""
    run = tmp_path / "killed"
    monkeypatch.setenv("EDGE_SVP_FAULT", "1:10:kill")
    killed = fit("--nproc", "2", "--out", str(run))
    assert killed.exit_code == 1 and "rank 1 was killed by SIGKILL" in killed.stderr
    assert not (run / "summary.json").exists()
    monkeypatch.delenv("EDGE_SVP_FAULT")
    resumed = CliRunner().invoke(main, ["fit", "--resume", str(run), "--nproc", "2"])
    assert resumed.exit_code == 0, resumed.output
    straight, again = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (runs[1], run))
    for name, tensor in straight["state_dict"].items():
        assert torch.equal(again["state_dict"][name], tensor), name
    records = [[json.loads(line) for line in open(d / "metrics.jsonl")] for d in (runs[1], run)]
    assert [{**r, "seconds": 0} for r in records[1]] == [{**r, "seconds": 0} for r in records[0]]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] == "end of epoch 1"
    assert (
        summary["test_accuracy"]
        == json.loads((runs[1] / "summary.json").read_text())["test_accuracy"]
    )


def test_eval_reloads_the_merged_checkpoint_in_one_process(runs, evaluate_run):
    _, pipeline = runs
    evaluated, summary = evaluate_run(pipeline)
    assert evaluated["per_block_accuracy"] == summary["per_block_accuracy"]


def test_data_parallel_replicas_step_on_the_whole_batch_gradient(runs, tmp_path):
    joint, _ = runs
    result = fit("--nproc", "2", "--stages", "1", "--out", str(tmp_path / "dp"))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "dp" / "summary.json").read_text())
    assert summary["pipeline"]["replicas"] == 2
    parameters = summary["parameters"]
    assert summary["pipeline"]["allreduce_bytes_per_step"] == 2 * parameters * 4  # 2 replicas
    reference = torch.load(joint / "checkpoint.pt", weights_only=True)["state_dict"]
    replicated = torch.load(tmp_path / "dp" / "checkpoint.pt", weights_only=True)["state_dict"]
    for name, tensor in reference.items():  # the same sums, in another order
        torch.testing.assert_close(replicated[name], tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fault, message", [
    ("1:3", "rank 1 failed: RuntimeError: injected fault at step 3"),
    ("1:3:kill", "rank 1 was killed by SIGKILL"),
    ("1:3:hang", "rank 1 did not answer within 3 s (seen by rank 0)"),
])  # fmt: skip
def test_a_failed_rank_stops_every_rank_and_is_named(monkeypatch, tmp_path, fault, message):
    monkeypatch.setenv("EDGE_SVP_FAULT", fault)
    start = time.monotonic()
    result = fit("--nproc", "2", "--timeout", "3", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"edge-svp: error: {message}")
    run = tmp_path / "run"
    # killed in its first epoch, at step 3: nothing to go on from, but the same command
    assert last.endswith(f"the other ranks were stopped; no epoch had finished, so it starts "
                         f"over with: edge-svp fit --resume {run} --nproc 2 --stages 2")  # fmt: skip
    assert time.monotonic() - start < 120  # start-up of three processes on a busy machine
    assert not (tmp_path / "run" / "summary.json").exists()


def test_input_a_rank_rejects_is_one_line_and_exit_2(tmp_path, capfd):
    result = fit("--nproc", "2", "--mem-budget", "1KB", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "per-rank budget" in result.stderr
    assert capfd.readouterr().err == ""  # the ranks themselves printed nothing
    assert not (tmp_path / "run").exists()


def ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sent, code, said", [
    (signal.SIGTERM, 143, "stopped by SIGTERM"),
    (signal.SIGINT, 130, "stopped by Ctrl-C"),
])  # fmt: skip
def test_sigterm_or_ctrl_c_stops_every_rank_in_one_line_and_keeps_the_last_epoch(
    tmp_path, sent, code, said
):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "edge_svp", "fit", *TINY_RUN, "--epochs", "500",
               "--nproc", "2", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # started as a shell without job control starts a background job, SIGINT ignored:
    # Ctrl-C stops it all the same, as it does a fit of one process
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=ignore_sigint)  # fmt: skip
    for line in process.stdout:
        if line.startswith("block"):  # an epoch is done: its checkpoint is written
            process.send_signal(sent)
            break
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert err.startswith(f"edge-svp: interrupted: {said}") and len(err.splitlines()) == 1
    assert f"resume with: edge-svp fit --resume {out} --nproc 2 --stages 2" in err
    assert (out / "checkpoint.pt").exists() and not (out / "summary.json").exists()
