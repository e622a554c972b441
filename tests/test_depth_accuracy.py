"""bench/families.py, depth_accuracy.py and depth_frontier.py: each family's depth is one --set
on its profile, the table's decay and difference to backprop are computed per seed, a budget
trains the deepest member that fits, and --reuse reads runs recorded at the same size."""

import argparse
import json
import sys
from pathlib import Path

import pytest

from edge_svp.config import load_profile, override, parse_settings
from edge_svp.models import build_blocks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
depth_accuracy = pytest.importorskip("depth_accuracy")
depth_frontier = pytest.importorskip("depth_frontier")
families = pytest.importorskip("families")


@pytest.mark.parametrize("family", ["cnn", "vit", "vit-192"])
@pytest.mark.parametrize("depth", [4, 8, 16])
def test_each_depth_is_one_setting_on_the_profile(family, depth):
    settings = families.depth_settings(family, depth)
    assert settings[0] == "--set" and len(settings) == 2
    config = override(load_profile(families.FAMILIES[family]), **parse_settings(settings[1:]))
    blocks = build_blocks(config.model.kind, config.model.options, (3, 32, 32))
    assert len(blocks) == depth
    if family == "cnn":  # four stages at every depth, each ending in a pool
        pooled = [i for i, b in enumerate(blocks, 1) if b[-1].__class__.__name__ == "MaxPool2d"]
        assert pooled == [depth // 4 * k for k in (1, 2, 3, 4)]


def test_a_cnn_depth_must_fill_its_stages():
    with pytest.raises(SystemExit, match="multiple of its 4 stages"):
        families.depth_settings("cnn", 6)


def run(method, seed, accuracy, per_block, epochs=10):
    return {"depth": 3, "method": method, "seed": seed, "test_accuracy": accuracy,
            "per_block": per_block, "seconds_per_epoch": 1.0, "epochs": epochs,
            "train_limit": 10000, "test_limit": None}  # fmt: skip


def test_rows_give_decay_and_the_paired_difference_to_backprop():
    runs = [
        run("bp", 0, 50.0, [None, None, 50.0]),
        run("bp", 1, 52.0, [None, None, 52.0]),
        run("svp joint", 0, 45.0, [47.0, 48.0, 45.0]),
        run("svp joint", 1, 49.0, [46.0, 47.0, 49.0]),
    ]
    joint, bp = depth_accuracy.aggregate(runs)
    assert joint["method"] == "svp joint" and bp["method"] == "bp"
    assert joint["vs_bp"] == "-4.00" and bp["vs_bp"] == ""
    assert joint["decay"] == "-0.50 ± 3.54"  # 45 - 48 and 49 - 47
    assert joint["per_block_mean"] == [46.5, 47.5, 47.0]
    assert bp["per_block"] == "- / - / 51.0" and bp["decay"] == ""
    assert joint["to_bp_accuracy"] == "-"  # runs recorded without their curves


def test_time_to_backprop_accuracy_from_the_curves():
    bp = [{**run("bp", 0, 50.0, [None, None, 50.0]), "curve": [[10.0, 40.0], [20.0, 50.0]]}]
    svp = [{**run("svp joint", 0, 55.0, [50.0, 52.0, 55.0]),
            "curve": [[15.0, 45.0], [30.0, 51.0], [45.0, 55.0]]}]  # fmt: skip
    joint, _ = depth_accuracy.aggregate(svp + bp)
    assert joint["to_bp_accuracy"] == "30.00"  # when it passed 50 %
    assert joint["at_bp_time"] == "45.00"  # where it stood at 20 s


def test_each_size_keeps_its_own_table_and_plots():
    runs = [run("bp", 0, 50.0, [None, None, 50.0]), run("bp", 0, 40.0, [None, None, 40.0], 3)]
    tables = depth_accuracy.tables_by_size(runs)
    assert {size: rows[0]["mean"] for size, rows in tables.items()} == {
        (10, 10000, None): 50.0, (3, 10000, None): 40.0}  # fmt: skip
    default = (10, 10000, None)
    assert depth_accuracy.size_name((10, 10000, None), default) == ""
    assert depth_accuracy.size_name((3, 5000, 2000), default) == "-3ep-5000-test2000"
    assert depth_accuracy.size_name((10, 5000, None), default) == "-10ep-5000"


def test_a_budget_trains_the_deepest_member_that_fits():
    floors = {4: 7_000_000, 8: 9_000_000, 16: 12_000_000}
    assert depth_frontier.deepest(floors, 9_000_000) == 8
    assert depth_frontier.deepest(floors, 20_000_000) == 16
    assert depth_frontier.deepest(floors, 6_999_999) is None


def test_reuse_reads_recorded_runs_only_of_the_same_size(tmp_path, monkeypatch):
    monkeypatch.setattr(depth_frontier, "RESULTS", tmp_path)
    recorded = {"budget_mib": 7.5, "method": "bp", "blocks": 4, "seed": 0, "test_accuracy": 32.0}
    size = {"profile": "cifar10-vit-deep-cpu", "epochs": 3, "train_limit": 5000,
            "test_limit": 2000}  # fmt: skip
    (tmp_path / "depth-frontier-vit.json").write_text(json.dumps({**size, "runs": [recorded]}))
    args = argparse.Namespace(family="vit", epochs=3, train_limit=5000, test_limit=2000,
                              reuse=True)  # fmt: skip
    assert depth_frontier.recorded_runs(args) == {(7.5, "bp", 4, 0): recorded}
    assert depth_frontier.recorded_runs(argparse.Namespace(**{**vars(args), "epochs": 10})) == {}
    assert depth_frontier.recorded_runs(argparse.Namespace(**{**vars(args), "reuse": False})) == {}


def test_a_method_s_run_directory_is_one_folder():
    common = pytest.importorskip("common")
    assert common.slug("svp layerwise, aux 2") == "svp-layerwise-aux-2"
    assert common.slug("svp layerwise, aux 2, recompute, epochs 10/10/3") == (
        "svp-layerwise-aux-2-recompute-epochs-10-10-3"
    )
