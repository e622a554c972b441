"""`import edge_svp` loads no torch until its API is used, so the ORT runtime can run
without torch; the API itself is unchanged."""

import subprocess
import sys

SCRIPT = """
import sys
import edge_svp
assert "torch" not in sys.modules
from edge_svp import SVPNetwork, train
assert "torch" in sys.modules
assert train.__module__ == "edge_svp.training" and callable(train)
assert edge_svp.train is train and SVPNetwork.__name__ == "SVPNetwork"
"""

# The function `train` and the subpackage `edge_svp.training` have different names, so the
# order of imports cannot make `edge_svp.train` the module.
SUBMODULE_FIRST = """
import edge_svp.run
import edge_svp
assert callable(edge_svp.train) and edge_svp.train.__module__ == "edge_svp.training"
"""


def test_package_api_is_imported_on_first_use():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_train_is_the_function_whatever_was_imported_first():
    result = subprocess.run([sys.executable, "-c", SUBMODULE_FIRST], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
