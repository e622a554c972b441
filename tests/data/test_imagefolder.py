import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from edge_svp.data import load_dataset
from edge_svp.errors import EdgeSVPError


def png_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_folder_zip(path, classes=("cat", "dog"), per_class=3, size=(8, 8), rgb=True):
    rng = np.random.default_rng(0)
    shape = (*size, 3) if rgb else size
    images = {}
    with zipfile.ZipFile(path, "w") as zf:
        for split in ("train", "test"):
            for cls in classes:
                for i in range(per_class):
                    img = rng.integers(0, 256, shape, dtype=np.uint8)
                    images[(split, cls, i)] = img
                    zf.writestr(f"root/{split}/{cls}/{i:03d}.png", png_bytes(img))
    return images


def test_zip_of_pngs(tmp_path):
    images = write_folder_zip(tmp_path / "pets.zip")
    data = load_dataset("imagefolder", tmp_path / "pets.zip")
    assert data.classes == ["cat", "dog"]
    assert data.x_train.shape == (6, 3, 8, 8)
    # every stored image is one of the written ones, with its own label
    for x, y in zip(data.x_train.numpy(), data.y_train.tolist(), strict=True):
        cls = data.classes[y]
        assert any(
            np.array_equal(x.transpose(1, 2, 0), images[("train", cls, i)]) for i in range(3)
        )


def test_folder_of_grayscale_images(tmp_path):
    zip_path = tmp_path / "g.zip"
    write_folder_zip(zip_path, rgb=False)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "folder")
    data = load_dataset("imagefolder", tmp_path / "folder")
    assert data.x_train.shape == (6, 1, 8, 8)


def test_mixed_image_sizes_are_rejected(tmp_path):
    path = tmp_path / "mixed.zip"
    write_folder_zip(path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("root/train/cat/big.png", png_bytes(np.zeros((9, 9, 3), dtype=np.uint8)))
    with pytest.raises(EdgeSVPError, match="must share one size"):
        load_dataset("imagefolder", path)


def test_missing_test_split_is_a_clear_error(tmp_path):
    path = tmp_path / "train-only.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/a/0.png", png_bytes(np.zeros((4, 4), dtype=np.uint8)))
    with pytest.raises(EdgeSVPError, match="found splits: \\['train'\\]"):
        load_dataset("imagefolder", path)


def test_corrupt_zip_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(EdgeSVPError, match="not a readable zip"):
        load_dataset("imagefolder", path)


def test_cifar10_python_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, 4).tolist()}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch))
    data = load_dataset("cifar10", tmp_path)
    assert data.x_train.shape == (20, 3, 32, 32)
    assert data.classes[0] == "airplane"


def test_cifar10_missing_is_a_clear_error(tmp_path):
    with pytest.raises(EdgeSVPError, match="cifar10-jpg.zip or cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path)
