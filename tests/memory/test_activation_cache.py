import threading

import pytest
import torch

from edge_svp.errors import EdgeSVPError
from edge_svp.memory.activation_cache import ActivationCache


def fill(cache, rows):
    for start in range(0, len(rows), 7):
        cache.write(start, rows[start : start + 7])


@pytest.mark.parametrize("location", ["device", "host", "disk"])
def test_cache_reads_back_identically(tmp_path, location):
    rows = torch.randn(50, 3, 4)
    cache = ActivationCache(50, (3, 4), location, directory=tmp_path)
    fill(cache, rows)
    idx = torch.tensor([49, 0, 17, 17, 3])
    assert torch.equal(cache.read(idx), rows[idx])
    cache.close()


def test_disk_cache_spills_to_a_file_and_removes_it(tmp_path):
    rows = torch.randn(20, 8)
    cache = ActivationCache(20, (8,), "disk", directory=tmp_path)
    fill(cache, rows)
    assert cache.path.stat().st_size == 20 * 8 * 4
    assert torch.equal(cache.read(torch.arange(20)), rows)
    path = cache.path
    cache.close()
    assert not path.exists()


def test_fp16_cache_stores_half_and_returns_float32(tmp_path):
    rows = torch.randn(10, 6)
    cache = ActivationCache(10, (6,), "disk", dtype="float16", directory=tmp_path)
    fill(cache, rows)
    assert cache.nbytes == 10 * 6 * 2
    out = cache.read(torch.arange(10))
    assert out.dtype == torch.float32
    assert torch.equal(out, rows.half().float())
    cache.close()


def test_stream_prefetches_in_order(tmp_path):
    rows = torch.randn(30, 2)
    cache = ActivationCache(30, (2,), "disk", directory=tmp_path)
    fill(cache, rows)
    chunks = list(torch.randperm(30).split(4))
    streamed = list(cache.stream(chunks))
    assert [idx.tolist() for idx, _ in streamed] == [c.tolist() for c in chunks]
    assert all(torch.equal(x, rows[idx]) for idx, x in streamed)
    cache.close()


def test_stream_can_stop_early(tmp_path):
    """A consumer that stops early (a break, an exception) ends the prefetch thread, which
    would otherwise wait on its full queue for ever, and the rows it got were the right ones."""
    rows = torch.randn(100, 2)
    cache = ActivationCache(100, (2,), "host")
    fill(cache, rows)
    before = set(threading.enumerate())
    stream = cache.stream(list(torch.arange(100).split(1)))
    seen = []
    for idx, x in stream:
        seen.append((int(idx), x))
        if len(seen) == 4:
            break
    assert len(set(threading.enumerate()) - before) == 1  # the producer, blocked on its queue
    stream.close()  # what the loop's end does to a generator it drops
    assert set(threading.enumerate()) - before == set()
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert all(torch.equal(x, rows[i : i + 1]) for i, x in seen)


def test_truncated_disk_cache_is_detected(tmp_path):
    cache = ActivationCache(10, (4,), "disk", directory=tmp_path)
    fill(cache, torch.randn(10, 4))
    with open(cache.path, "r+b") as f:
        f.truncate(5 * 4 * 4)
    with pytest.raises(EdgeSVPError, match="truncated at row 7"):
        cache.read(torch.tensor([1, 7]))
    cache.close()
