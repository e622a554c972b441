"""Runs `edge-svp fit` in child processes forked from one interpreter that imported torch
and ran a first run itself; a fresh subprocess per run would pay seconds of imports and
first-call set-up each.

    python tests/fork_runs.py '{"first": [args], "groups": [[[name, kill_at, [args]], ...], ...]}'

`first` runs in this interpreter. Then the groups run one after another, the runs of a
group at once, each in a child that sets EDGE_SVP_KILL_AT (if not null), calls the CLI and
exits as it does. Prints {name: exit code, or minus the signal that ended the child} as
JSON. With OMP_NUM_THREADS=1 no thread outlives a run, so forking is safe (checked).
"""

import json
import os
import sys
import threading

from edge_svp.cli import main


def run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def start(args: list[str], kill_at: str | None) -> int:
    pid = os.fork()
    if pid:
        return pid
    if kill_at:
        os.environ["EDGE_SVP_KILL_AT"] = kill_at
    code = 1
    try:
        code = run(args)
    finally:
        os._exit(code)


plan = json.loads(sys.argv[1])
stdout = os.dup(1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the runs' epoch lines; the result goes to stdout
results = {"first": run(plan["first"])}
if threading.active_count() != 1:
    sys.exit(f"cannot fork safely: {threading.active_count()} threads are running")
for group in plan["groups"]:
    children = {start(args, kill_at): name for name, kill_at, args in group}
    for pid, name in children.items():
        _, status = os.waitpid(pid, 0)
        results[name] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
os.write(stdout, (json.dumps(results) + "\n").encode())
