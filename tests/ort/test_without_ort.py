"""Without onnx and onnxruntime the package still works, and the ORT commands say what to
install (run in a subprocess where both are blocked)."""

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["onnx"] = sys.modules["onnxruntime"] = None  # as if not installed
from click.testing import CliRunner
from edge_svp.cli import main
import edge_svp
assert edge_svp.SVPNetwork
for args in (["export", "--profile", "digits-mlp", "--out", {out!r}],
             ["fit", "--backend", "ort", "--schedule", "layerwise", "--out", {out!r}]):
    result = CliRunner().invoke(main, args)
    print(result.exit_code, result.stderr.strip())
"""


def test_ort_commands_explain_the_missing_extra(tmp_path):
    script = SCRIPT.format(out=str(tmp_path / "out"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("2 edge-svp: error:"), line
        assert "pip install -c constraints.txt -e '.[ort]'" in line  # as the README says
    assert not (tmp_path / "out").exists()
