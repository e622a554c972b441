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
assert train.__module__ == "edge_svp.train" and callable(train)
assert edge_svp.train is train and SVPNetwork.__name__ == "SVPNetwork"
"""


def test_package_api_is_imported_on_first_use():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
