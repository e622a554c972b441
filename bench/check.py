"""Golden numbers: the quick case of each benchmark, run again and compared with its stored
result in bench/results, within a stated tolerance.

    python bench/check.py              # every check
    python bench/check.py flops        # one

Each check runs its benchmark's smallest case in a fresh process, with EDGE_SVP_BENCH_OUT
pointing at a temporary folder (the stored results stay as they are), then compares the
named fields of the rows both have. A field's tolerance is relative: 0 for what is counted
(FLOPs depend on shapes only), a few per cent for what is measured (a smallest budget rests
on probes of resident memory, which differ a little from process to process). Prints a table
of every compared field and exits 1 if any is out of tolerance. `tox -e bench` runs them all.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common import RESULTS, ROOT, table

DATA = ROOT.parent / "shared" / "data"  # synthetic inputs of the same shape where absent


@dataclass
class Check:
    script: str
    args: list[str]
    results: str  # bench/results/RESULTS.json
    key: tuple[str, ...]  # the fields that name a row
    tolerance: dict[str, float]  # field -> relative tolerance


CHECKS = {
    "flops": Check("flops.py", ["--profiles", "digits-mlp", "mnist-mlp", "cifar10-cnn"],
                   "flops", ("profile", "method"),
                   {"total MFLOP": 0.0, "backward MFLOP": 0.0, "svp / bp": 0.0}),
    "depth": Check("depth.py", ["--depths", "4", "--no-measure", "--data-dir", str(DATA)],
                   "depth", ("depth",),
                   {"bp MiB": 0.05, "svp joint MiB": 0.05, "svp layerwise MiB": 0.05}),
}  # fmt: skip


def run(check: Check, out: Path) -> list[dict]:
    """The check's rows, from a fresh run of its benchmark that writes under `out`."""
    env = {**os.environ, "EDGE_SVP_BENCH_OUT": str(out), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "bench" / check.script), *check.args]
    proc = subprocess.run(command, cwd=ROOT / "bench", env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{check.script} failed:\n{proc.stderr[-2000:]}")
    return json.loads((out / "results" / f"{check.results}.json").read_text())["rows"]


def compare(name: str, check: Check, fresh: list[dict]) -> list[dict]:
    stored = json.loads((RESULTS / f"{check.results}.json").read_text())["rows"]
    golden = {tuple(row[k] for k in check.key): row for row in stored}
    rows = []
    for row in fresh:
        key = tuple(row[k] for k in check.key)
        if key not in golden:
            raise SystemExit(f"{name}: no stored row {key} in {check.results}.json")
        for field, tolerance in check.tolerance.items():
            if field not in row:
                continue
            then, now = golden[key][field], row[field]
            off = abs(now - then) / abs(then) if then else abs(now)
            rows.append({"check": name, "row": " ".join(map(str, key)), "field": field,
                         "stored": then, "now": now, "off %": round(100 * off, 2),
                         "tolerance %": 100 * tolerance, "ok": off <= tolerance + 1e-9})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="*", help=f"any of {', '.join(CHECKS)} (default: all)")
    names = parser.parse_args().checks or list(CHECKS)
    if unknown := [n for n in names if n not in CHECKS]:
        parser.error(f"no check {', '.join(unknown)}; the checks are {', '.join(CHECKS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-svp-check-") as tmp:
        for name in names:
            rows += compare(name, CHECKS[name], run(CHECKS[name], Path(tmp) / name))
    columns = ["check", "row", "field", "stored", "now", "off %", "tolerance %", "ok"]
    print(table(rows, [(c, c) for c in columns]))
    failed = [r for r in rows if not r["ok"]]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(rows)} numbers out of tolerance")
    print(f"all {len(rows)} numbers within tolerance")


if __name__ == "__main__":
    main()
