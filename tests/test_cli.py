import json

import pytest
from click.testing import CliRunner

from edge_svp import progress
from edge_svp.cli import main


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, tiny_run):
    out = tmp_path_factory.mktemp("runs") / "digits"
    result = CliRunner().invoke(main, ["fit", *tiny_run, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_fit_writes_a_complete_run_directory(digits_run):
    out, output = digits_run
    summary = json.loads((out / "summary.json").read_text())
    for key in ["method", "schedule", "profile", "dataset", "epochs", "batch_size", "seed",
                "test_accuracy", "per_block_accuracy", "peak_memory_bytes", "wall_seconds",
                "versions"]:  # fmt: skip
        assert key in summary, key
    assert summary["method"] == "svp" and summary["dataset"] == "digits"
    assert len(summary["per_block_accuracy"]) == 2
    assert summary["test_accuracy"] == summary["per_block_accuracy"][-1] > 0.2  # chance: 0.1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["block"], r["epoch"]) for r in records] == [(1, 1), (2, 1), (1, 2), (2, 2)]
    assert summary["final_epoch"] == records[-1]
    # the training memory is part of the process's peak, measured above its baseline
    memory = summary["memory"]
    assert summary["peak_memory_bytes"] >= memory["baseline_bytes"] + max(
        memory["measured_peak_bytes"]
    )
    assert (out / "config.toml").exists() and (out / "checkpoint.pt").exists()
    assert "test accuracy" in output and str(out) in output


def test_eval_reproduces_the_test_accuracy(digits_run, evaluate_run):
    out, _ = digits_run
    evaluated, summary = evaluate_run(out)
    assert evaluated["test_accuracy"] == summary["test_accuracy"]
    assert evaluated["per_block_accuracy"] == summary["per_block_accuracy"]


def test_bp_run_reports_only_the_trained_head(tmp_path, tiny_run):
    out = tmp_path / "bp"
    result = CliRunner().invoke(main, ["fit", *tiny_run, "--method", "bp", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "bp" and summary["schedule"] == "end-to-end"
    assert summary["per_block_accuracy"][0] is None
    assert summary["per_block_accuracy"][1] == summary["test_accuracy"]


def test_fit_help_documents_every_option():
    output = CliRunner().invoke(main, ["fit", "--help"]).output
    for option in ["--profile", "--dataset", "--data-dir", "--method", "--schedule", "--epochs",
                   "--batch-size", "--lr", "--seed", "--train-limit", "--out", "--set"]:  # fmt: skip
        assert option in output, option


def test_profiles_lists_the_shipped_profiles():
    output = CliRunner().invoke(main, ["profiles"]).output
    for name in ["digits-mlp", "mnist-mlp", "cifar10-cnn", "cifar10-vit"]:
        assert name in output


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "--profile", "nope"], "unknown profile 'nope'"),
        (["fit", "--dataset", "mnits"], "did you mean 'mnist'"),
        (["fit", "--dataset", "mnist", "--data-dir", "/nonexistent"], "does not exist"),
        (["fit", "--set", "svp.betta=1"], "did you mean 'beta'"),
        (["fit", "--set", "svp.beta"], "SECTION.KEY=VALUE"),
        (["fit", "--set", "model.channels=[[4]]"], "unknown key 'channels'"),
        (["fit", "--set", "svp.divergence=kll"], "unknown divergence"),
        (["fit", "--dataset", "cifar10", "--data-dir", "."], "did not find cifar10-jpg.zip"),
        (["eval", "/nonexistent/run"], "not a run directory"),
        (["plan", "--set", "optim.state_on_host=on", "--device", "cpu"], "trains on the CPU"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_existing_run_directory_is_not_overwritten(digits_run, tiny_run):
    out, _ = digits_run
    before = (out / "summary.json").read_text()
    result = CliRunner().invoke(main, ["fit", *tiny_run, "--out", str(out)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (out / "summary.json").read_text() == before


def test_failed_input_leaves_no_run_directory(tmp_path):
    out = tmp_path / "never"
    result = CliRunner().invoke(main, ["fit", "--dataset", "mnist", "--data-dir", str(tmp_path),
                                       "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2
    assert not out.exists()


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, tiny_run):
    (tmp_path / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(main, ["fit", *tiny_run, "--out", str(tmp_path), "--overwrite"])
    assert result.exit_code == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_plan_off_a_terminal_logs_each_probing_that_took_a_while(monkeypatch, tiny_run):
    args = ["plan", *tiny_run, "--schedule", "layerwise", "--mem-budget", "1TB", "--json"]
    quick = CliRunner().invoke(main, args)
    assert quick.exit_code == 0 and quick.stderr == ""  # a quick plan writes no more
    monkeypatch.setattr(progress, "LOGGED_PROBING_SECONDS", 0)
    logged = CliRunner().invoke(main, args)
    assert logged.exit_code == 0, logged.output
    assert logged.stderr.startswith("probing (fp32 state): 2 blocks in ")
    assert json.loads(logged.stdout)["schedule"] == "layerwise"  # stdout: the plan alone


def test_plan_without_the_data_probes_inputs_of_its_shape_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the profile's data folder is not here
    args = ["plan", "--profile", "cifar10-cnn", "--schedule", "layerwise", "--set",
            "model.channels=[[8], [8]]", "--train-limit", "1000"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "probed with synthetic cifar10 inputs" in result.output
    plan = json.loads(CliRunner().invoke(main, [*args, "--json"]).stdout)
    assert plan["probed_on"].startswith("synthetic cifar10 inputs")
    assert plan["costs"][0]["input_shape"] == [3, 32, 32]
    # caches hold the dataset's own numbers of examples: 1,000 of training, 10,000 of test
    assert plan["blocks"][0]["cache_bytes"] == 11_000 * 8 * 16 * 16 * 4
    fit = CliRunner().invoke(main, ["fit", *args[1:]])
    assert fit.exit_code == 2 and "does not exist" in fit.stderr  # training needs the data
