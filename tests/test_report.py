import json
import shutil

import pytest
from click.testing import CliRunner
from PIL import Image

from edge_svp.cli import main
from edge_svp.errors import EdgeSVPError
from edge_svp.report import write_report

pytest.importorskip("matplotlib")  # the `report` extra; tox installs it


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_run):
    """A budgeted SVP layerwise run (its second block trains one epoch) and its backprop twin
    on digits."""
    root = tmp_path_factory.mktemp("runs")
    runs = {"svp": ["--schedule", "layerwise", "--mem-budget", "64MB",
                    "--set", "train.block_epochs=[2,1]"],
            "bp": ["--method", "bp"]}  # fmt: skip
    for name, extra in runs.items():
        result = CliRunner().invoke(main, ["fit", *tiny_run, *extra, "--out", str(root / name)])
        assert result.exit_code == 0, result.output
    return root / "svp", root / "bp"


def test_report_of_an_svp_bp_pair(pair, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", *map(str, pair), "--out", str(out)])
    assert result.exit_code == 0, result.output
    pngs = {p.name: Image.open(p) for p in out.glob("*.png")}
    assert set(pngs) == {"accuracy-depth.png", "curves-svp.png", "curves-bp.png", "memory-svp.png"}
    assert all(im.format == "PNG" and im.width >= 600 and im.height >= 400 for im in pngs.values())
    md = (out / "report.md").read_text()
    for png in pngs:
        assert f"]({png})" in md
    svp, bp = (json.loads((p / "summary.json").read_text()) for p in pair)
    rows = [line for line in md.splitlines() if line.startswith(("| svp |", "| bp |"))]
    assert len(rows) == 2  # the side-by-side table
    assert f"| {100 * svp['test_accuracy']:.2f} |" in rows[0]
    assert f"| {100 * bp['test_accuracy']:.2f} |" in rows[1]
    assert "| 61.0 |" in rows[0]  # the budget, 64 MB in MiB
    assert "| 2/1 |" in rows[0] and "| 2 |" in rows[1]  # each block's epochs, and the run's
    assert "follows no per-block plan" in md  # backprop has no memory plot, and says why
    memory = svp["memory"]
    blocks = " / ".join(map(str, memory["micro_batch"]))
    caches = " / ".join(c or "none" for c in memory["cache"])
    assert f"micro-batches {blocks}, caches {caches}." in md  # as a person writes them


def test_a_run_without_memory_section_says_so_instead_of_plotting(pair, tmp_path):
    run = tmp_path / "old-run"
    shutil.copytree(pair[0], run)
    summary = json.loads((run / "summary.json").read_text())
    del summary["memory"]
    (run / "summary.json").write_text(json.dumps(summary))
    write_report([run], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "has no memory section" in md
    assert not (tmp_path / "report" / "memory-old-run.png").exists()
    assert (tmp_path / "report" / "curves-old-run.png").exists()


def test_bad_run_directories_are_one_line_and_exit_2(tmp_path, pair):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.toml").write_text("")
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path): "is not a run directory",
        str(unfinished): "has no summary.json",
    }
    for run_dir, message in cases.items():
        result = CliRunner().invoke(main, ["report", str(pair[0]), run_dir, "--out",
                                           str(tmp_path / "r")])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing is written for bad input


def test_without_matplotlib_the_report_says_how_to_get_it(pair, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(EdgeSVPError, match=r"edge-svp\[report\]"):
        write_report([pair[0]], tmp_path / "r")
