"""Streaming (activations, labels) from one stage to the next with torch.distributed
point-to-point calls: gloo on CPU, NCCL on GPU.

Sizes are never sent: both ends walk the same sequence of batches (it follows from the
seed), so a receiver knows each message's shape. The sender does not wait for a message to
arrive before computing the next (up to IN_FLIGHT outstanding); the receiver posts the next
receive before it trains on the current one. Every wait ends after the process group's
timeout, as a PeerFailure naming the peer.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from edge_svp.distributed.failure import PeerFailure
from edge_svp.distributed.stages import IN_FLIGHT


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@contextmanager
def peer_errors(peer: int | None, timeout: float):
    """Turn a failed or timed-out call between ranks into a PeerFailure naming the peer."""
    try:
        yield
    except RuntimeError as e:
        who = f"rank {peer}" if peer is not None else "a peer rank"
        if "timed out" in str(e).lower() or "timeout" in str(e).lower():
            raise PeerFailure(peer, f"{who} did not answer within {timeout:g} s") from None
        raise PeerFailure(peer, f"{who} is gone ({str(e).splitlines()[0][-120:]})") from None


def wait(work, peer: int | None, timeout: float) -> None:
    with peer_errors(peer, timeout):
        work.wait()


class Outbox:
    """What one stage sends to the next replica of its chain."""

    def __init__(self, peer: int, group, timeout: float):
        self.peer, self.group, self.timeout = peer, group, timeout
        self.pending: deque = deque()
        self.bytes = 0
        self.wait_seconds = 0.0

    def send(self, h: torch.Tensor, y: torch.Tensor) -> None:
        h = h.detach().contiguous()
        works = [dist.isend(h, self.peer, self.group, tag=0),
                 dist.isend(y, self.peer, self.group, tag=1)]  # fmt: skip
        self.pending.append((works, h, y))  # the tensors live until they are sent
        self.bytes += _nbytes(h) + _nbytes(y)
        while len(self.pending) > IN_FLIGHT:
            self._wait_oldest()

    def flush(self) -> None:
        while self.pending:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        start = time.perf_counter()
        for work in self.pending.popleft()[0]:
            wait(work, self.peer, self.timeout)
        self.wait_seconds += time.perf_counter() - start


class Inbox:
    """What one stage receives from the previous replica of its chain."""

    def __init__(self, peer: int, group, timeout: float, shape, device: torch.device):
        self.peer, self.group, self.timeout = peer, group, timeout
        self.shape, self.device = tuple(shape), device
        self.bytes = 0
        self.wait_seconds = 0.0

    def _post(self, m: int):
        h = torch.empty(m, *self.shape, device=self.device)
        y = torch.empty(m, dtype=torch.long, device=self.device)
        if not m:  # a replica's share of a batch may be empty: nothing is sent
            return [], h, y
        works = [dist.irecv(h, self.peer, self.group, tag=0),
                 dist.irecv(y, self.peer, self.group, tag=1)]  # fmt: skip
        self.bytes += _nbytes(h) + _nbytes(y)
        return works, h, y

    def _take(self, posted) -> tuple[torch.Tensor, torch.Tensor]:
        works, h, y = posted
        start = time.perf_counter()
        for work in works:
            wait(work, self.peer, self.timeout)
        self.wait_seconds += time.perf_counter() - start
        return h, y

    def receive(self, sizes: Iterable[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(activations, labels) for messages of the given batch sizes, in order; the next
        one is already on its way while the caller works on the current one."""
        posted = None
        for m in sizes:
            following = self._post(m)
            if posted is not None:
                yield self._take(posted)
            posted = following
        if posted is not None:
            yield self._take(posted)
