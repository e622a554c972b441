"""Checkpoints: atomic, checksummed, and the previous good one used when the latest is bad."""

import json

import pytest
import torch

from edge_svp.checkpoint import DIGESTS, LATEST, PREVIOUS, CheckpointStore
from edge_svp.errors import EdgeSVPError
from edge_svp.files import atomic_write_text


def checkpoint(n: int) -> dict:
    return {"state_dict": {"w": torch.full((64,), float(n))}, "n": n}


def written(tmp_path, count: int) -> CheckpointStore:
    store = CheckpointStore(tmp_path)
    for n in range(1, count + 1):
        store.write(checkpoint(n))
    return store


def read(store) -> tuple[dict | None, list[str]]:
    warnings = []
    return store.read(warnings.append), warnings


def test_latest_and_previous_are_kept_with_their_digests(tmp_path):
    store = written(tmp_path, 3)
    got, warnings = read(store)
    assert got["n"] == 3 and not warnings
    digests = json.loads((tmp_path / DIGESTS).read_text())
    assert set(digests) == {LATEST, PREVIOUS}
    assert torch.load(tmp_path / PREVIOUS, weights_only=True)["n"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LATEST, PREVIOUS, DIGESTS])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "fails its checksum"),
        (lambda p: p.write_bytes(p.read_bytes()[:100] + b"X" + p.read_bytes()[101:]), "checksum"),
        (lambda p: p.unlink(), "checkpoint.pt is missing"),
    ],
    ids=["truncated", "one-byte-flipped", "missing"],
)
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, message):
    store = written(tmp_path, 2)
    damage(tmp_path / LATEST)
    got, warnings = read(store)
    assert got["n"] == 1
    assert len(warnings) == 1 and message in warnings[0] and PREVIOUS in warnings[0]


def test_no_good_checkpoint_is_a_one_line_error(tmp_path):
    store = written(tmp_path, 2)
    for name in (LATEST, PREVIOUS):
        (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(EdgeSVPError, match="no usable checkpoint") as error:
        store.read()
    assert "\n" not in str(error.value)


def test_a_run_without_checkpoints_reads_as_none(tmp_path):
    assert CheckpointStore(tmp_path).read() is None


def test_writing_after_a_fallback_keeps_a_good_previous(tmp_path):
    store = written(tmp_path, 2)
    (tmp_path / LATEST).unlink()  # a crash between the two renames
    assert read(store)[0]["n"] == 1
    store.write(checkpoint(3))
    got, warnings = read(store)
    assert got["n"] == 3 and not warnings
    (tmp_path / LATEST).write_bytes(b"x")
    assert read(store)[0]["n"] == 1  # the previous is the last good one


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}\n")
    atomic_write_text(tmp_path / "a.json", "[]\n")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_text() == "[]\n"
