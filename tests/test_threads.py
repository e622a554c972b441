"""The CPU threads torch and ONNX Runtime get (edge_svp/threads.py)."""

import os

from edge_svp.threads import choose_threads


def test_threads_are_asked_for_or_the_cpus_other_work_leaves_free(monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(5) == 5  # --threads, train.threads
    assert choose_threads() == 3  # the operator's OMP_NUM_THREADS
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert choose_threads() == cpus  # an idle machine: every CPU this process may use
    monkeypatch.setattr(os, "getloadavg", lambda: (cpus - 0.7, 0.0, 0.0))
    assert choose_threads() == 1  # all but a fraction busy: one thread, never none
    monkeypatch.setattr(os, "getloadavg", lambda: (cpus + 5.0, 0.0, 0.0))
    assert choose_threads() == 1
