"""An interrupted and resumed run ends exactly like a straight one (CPU, fixed seed), for
every schedule; NaN and inf stop a run or are skipped and counted."""

import json

import pytest
import torch
from click.testing import CliRunner
from tiny_runs import TINY_ARGS, CtrlCAt, assert_same_run, tiny_config, weights

from edge_svp.cli import main
from edge_svp.data import Dataset, Preprocess, load_dataset
from edge_svp.errors import Interrupted, NumericalFault
from edge_svp.network import build_network
from edge_svp.run import fit
from edge_svp.training import TrainState, train


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the same threads in every run compared


# dropout and augmentation draw from the global RNG, which a resume must restore too
SCHEDULES = {
    "joint": {"train.schedule": "joint", "svp.proj_dropout": 0.2},
    "layerwise": {"train.schedule": "layerwise", "svp.proj_dropout": 0.2},
    "bp": {"train.method": "bp", "data.augment": True},
    # the optimizer's levers: fp8 state (layers of 4,096 values and more) stepped in backward
    "levers": {
        "train.schedule": "joint",
        "model.widths": [128, 128],
        "optim.state_precision": "fp8",
        "optim.step_in_backward": "on",
    },
}


@pytest.mark.parametrize(
    "kind, label, item",
    [
        ("joint", "epoch 2", 2),  # mid-epoch, after a periodic checkpoint at step 3
        ("layerwise", "block 2 epoch 1", 4),  # block 2: block 1's host caches are rebuilt
        ("bp", "epoch 1", 5),
        ("levers", "epoch 2", 2),
    ],
)
def test_interrupted_then_resumed_run_ends_exactly_like_a_straight_one(tmp_path, kind, label, item):
    fit(tiny_config(**SCHEDULES[kind]), out=tmp_path / "straight")
    stopped = tmp_path / "stopped"
    with pytest.raises(Interrupted, match=f"resume with: edge-svp fit --resume {stopped}"):
        fit(tiny_config(**SCHEDULES[kind]), out=stopped, reporter=CtrlCAt(label, item))
    assert not (stopped / "summary.json").exists()
    summary = fit(resume=stopped)
    assert summary["resumed_from"].endswith(f"step {item + 1}")  # the batch in progress finished
    assert_same_run(stopped, tmp_path / "straight")


class CrashAt(CtrlCAt):
    """Fails in the middle of a batch, as a crash would: no checkpoint of its own."""

    def track(self, iterable, total, label):
        for k, item in enumerate(iterable):
            if label == self.label and k == self.item:
                raise MemoryError("simulated crash")
            yield item


def test_a_crash_resumes_from_the_last_periodic_checkpoint(tmp_path):
    fit(tiny_config(), out=tmp_path / "straight")
    crashed = tmp_path / "crashed"
    # 7 batches an epoch, a checkpoint every 3 steps: the last one before batch 7 of epoch 2
    # (step 14) came after its step 5 (step 12); step 6 is lost and done again
    with pytest.raises(MemoryError):
        fit(tiny_config(), out=crashed, reporter=CrashAt("epoch 2", 6))
    assert fit(resume=crashed)["resumed_from"] == "epoch 2, step 5"
    assert_same_run(crashed, tmp_path / "straight")


def test_a_run_stopped_before_its_first_checkpoint_starts_over(tmp_path):
    fit(tiny_config(), out=tmp_path / "straight")
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        fit(tiny_config(), out=run, reporter=CtrlCAt("epoch 1", 1))
    for name in ("checkpoint.pt", "checkpoint.prev.pt", "checkpoints.json"):
        (run / name).unlink(missing_ok=True)  # as if killed before the first one was written
    assert fit(resume=run)["resumed_from"] is None
    assert_same_run(run, tmp_path / "straight")


def test_resume_accepts_a_data_folder_that_moved(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        fit(tiny_config(), out=run, reporter=CtrlCAt("epoch 1", 1))
    config = (run / "config.toml").read_text()
    (run / "config.toml").write_text(config.replace("[data]\n", '[data]\ndata_dir = "/moved"\n'))
    assert fit(resume=run)["resumed_from"] == "epoch 1, step 2"


def test_resume_via_the_command_line_takes_nothing_but_the_run(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        fit(tiny_config(), out=out, reporter=CtrlCAt("epoch 1", 1))
    result = CliRunner().invoke(main, ["fit", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    assert f"resuming {out}" in result.output
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == "epoch 1, step 2"


def test_a_nan_stops_the_run_naming_block_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["fit", *TINY_ARGS, "--lr", "1e30", "--set", "train.checkpoint_every=1"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 3, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in result.output
    assert "NaN or inf in the" in line and "block 1, epoch 1, step 2" in line
    assert "last checkpoint (epoch 1, step 1) is kept" in line
    assert all(torch.isfinite(w).all() for w in weights(out).values())
    assert CliRunner().invoke(main, ["eval", str(out)]).exit_code == 0


def test_a_nan_gradient_under_a_finite_loss_is_caught_too():
    digits = load_dataset("digits").limit(200)
    config = tiny_config(**{"train.schedule": "layerwise"})
    net = build_network(config, digits.input_shape, digits.num_classes)
    net.blocks[1][0].weight.register_hook(lambda grad: grad * float("nan"))  # block 2 only
    with pytest.raises(NumericalFault) as error:
        train(net, digits, config.train, config.optim)
    assert str(error.value).startswith(
        "NaN or inf in the gradients at block 2, epoch 1, step 1; training stopped and no "
        "checkpoint was written before it"
    )


def test_a_nan_gradient_is_caught_where_the_optimizer_steps_in_backward():
    digits = load_dataset("digits").limit(200)
    config = tiny_config(**{"train.schedule": "layerwise", "optim.step_in_backward": "on"})
    net = build_network(config, digits.input_shape, digits.num_classes)
    net.blocks[1][0].weight.register_hook(lambda grad: grad * float("nan"))
    with pytest.raises(NumericalFault, match="NaN or inf in the gradients at block 2"):
        train(net, digits, config.train, config.optim)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_skip_bad_batches_skips_and_counts_a_poisoned_batch():
    digits = load_dataset("digits").limit(300)
    preprocess = Preprocess.fit(digits.x_train, True, False)  # from the clean data
    x, x_test = digits.x_train.float() / 255, digits.x_test.float() / 255
    x[17] = float("nan")  # one poisoned example: one bad batch per epoch
    poisoned = Dataset("poisoned", x, digits.y_train, x_test, digits.y_test)
    config = tiny_config(**{"train.epochs": 3, "train.skip_bad_batches": True})
    net = build_network(config, digits.input_shape, digits.num_classes)
    state = TrainState(config.train)
    records = train(net, poisoned, config.train, config.optim, preprocess, state=state)
    assert state.bad_batches == config.train.epochs
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert all(r["loss"] == r["loss"] for r in records)  # no NaN in the epoch means
    assert records[-1]["test_accuracy"] > 0.6


def test_skip_bad_batches_is_reported_in_the_summary(tmp_path):
    out = tmp_path / "run"
    args = ["fit", *TINY_ARGS, "--lr", "1e30", "--skip-bad-batches", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    bad = json.loads((out / "summary.json").read_text())["bad_batches"]
    assert bad > 0 and f"bad batches skipped      {bad}" in result.output
