import gzip

import numpy as np
import pytest

from edge_svp.data import load_dataset
from edge_svp.data.idx import read_idx
from edge_svp.errors import EdgeSVPError


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=20, n_test=10, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_from_gz_or_raw_files(tmp_path, compress):
    arrays = write_mnist(tmp_path / "mnist", compress=compress)
    data = load_dataset("mnist", tmp_path)
    assert data.x_train.shape == (20, 1, 28, 28)
    assert data.x_test.shape == (10, 1, 28, 28)
    assert np.array_equal(data.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert data.num_classes == 10


def test_second_load_comes_from_the_cache(tmp_path):
    write_mnist(tmp_path / "mnist")
    first = load_dataset("mnist", tmp_path)
    for f in (tmp_path / "mnist").iterdir():  # make the source unreadable but keep its stat
        f.chmod(0o000)
    try:
        second = load_dataset("mnist", tmp_path)
    finally:
        for f in (tmp_path / "mnist").iterdir():
            f.chmod(0o644)
    assert np.array_equal(first.x_train.numpy(), second.x_train.numpy())


def test_fashion_mnist_has_named_classes(tmp_path):
    write_mnist(tmp_path / "fashion-mnist")
    data = load_dataset("fashion-mnist", tmp_path)
    assert data.classes[0] == "t-shirt" and len(data.classes) == 10


def test_missing_files_name_what_was_looked_for(tmp_path):
    with pytest.raises(EdgeSVPError, match="train-images-idx3-ubyte.*" + str(tmp_path)):
        load_dataset("mnist", tmp_path)


def test_truncated_idx_file_is_detected(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((4, 28, 28)))[:-10])
    with pytest.raises(EdgeSVPError, match="truncated or corrupt"):
        read_idx(path)


def test_bad_header_is_detected(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"\x50\x4b\x03\x04garbage")
    with pytest.raises(EdgeSVPError, match="not a uint8 IDX file"):
        read_idx(path)


def test_corrupt_gzip_is_detected(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 28))))[:30])
    with pytest.raises(EdgeSVPError, match="cannot read"):
        read_idx(path)


def test_real_mnist_header_and_sizes(shared_data):
    data = load_dataset("mnist", shared_data)
    assert data.x_train.shape == (60000, 1, 28, 28)
    assert data.x_test.shape == (10000, 1, 28, 28)
    assert sorted(data.y_train.unique().tolist()) == list(range(10))
