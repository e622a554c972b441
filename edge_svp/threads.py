"""How many CPU threads torch and ONNX Runtime get. No torch here: the ONNX Runtime paths
(export's training runtime, `predict --backend ort`) ask too."""

import os


def choose_threads(requested: int = 0) -> int:
    """CPU threads for torch and ONNX Runtime: `requested` if given (train.threads,
    --threads); else OMP_NUM_THREADS if set (the machine's operator said so); else the CPUs
    this process may use that other work is not keeping busy (the 1-minute load average),
    at least one. More threads than free cores make every matrix product wait for the slowest
    (a 2-core machine with one busy core: 181 s against 7 s for the default fit)."""
    if requested:
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(int(os.environ["OMP_NUM_THREADS"]), 1)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cpus or 1, (cpus or 1) - busy))
