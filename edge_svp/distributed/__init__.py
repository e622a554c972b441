"""Pipelined SVP across processes and devices, on torch.distributed (docs/distributed.md).

edge-svp fit --nproc 2                          # two local ranks, one stage each
edge-svp fit --nproc 4 --stages 2               # two stages of two data-parallel replicas
torchrun --nproc-per-node 2 -m edge_svp fit     # the same code, started by torchrun

schedule.py       the pipelined schedule: what a pipeline accepts, its label
stages.py         which rank trains which blocks: contiguous stages balanced by the planner
stream.py         activations and labels sent forward, point to point (gloo or NCCL)
pipeline.py       one stage's training and evaluation loop
process_group.py  a rank's device and its process groups
setup.py          rank 0's set-up (data, stages, run directory, a resumed run's checkpoint)
rank_training.py  a rank's epoch and its report; a resumed rank's start
exchange.py       what ranks send rank 0 at an epoch's end, and it back on resume
run_writer.py     rank 0's side of the run directory: metrics, checkpoint, summary
worker.py         one rank of a fit, from joining to its last barrier
launch.py         --nproc: start local ranks, watch them, stop all when one fails
failure.py        how a failed rank is named, and how a stopped run resumes
"""

import os

from edge_svp.errors import EdgeSVPError

DEFAULT_TIMEOUT = 300.0  # seconds a rank waits for another before it stops
SETUP_SECONDS = 600  # joining, loading data and probing may take this long
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_as_rank() -> bool:
    """Is this process one rank of several (started by torchrun or by `fit --nproc`)?"""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def rank() -> int:
    return int(os.environ.get("RANK", 0)) if launched_as_rank() else 0


def mode(nproc: int | None, stages: int | None) -> str | None:
    """How `fit` runs: None (one process), "launch" (start `nproc` local ranks) or "rank"
    (be one rank of several)."""
    if launched_as_rank():
        if nproc:
            raise EdgeSVPError("--nproc starts processes itself; under torchrun, leave it out")
        return "rank"
    if stages and not nproc:
        raise EdgeSVPError("--stages needs --nproc (or a start by torchrun)")
    return "launch" if nproc else None
