"""CIFAR-10: the image-folder zip (`cifar10-jpg.zip`) or the official python pickle batches."""

import pickle
from pathlib import Path

import numpy as np

from edge_svp.data.cache import cached_arrays
from edge_svp.data.dataset import Dataset
from edge_svp.data.imagefolder import load_image_folder
from edge_svp.errors import DataNotFound, EdgeSVPError

CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
PICKLE_DIR = "cifar-10-batches-py"


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return x, np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
        raise EdgeSVPError(f"cannot read CIFAR-10 batch {path}: {e}") from None


def _load_pickles(folder: Path) -> Dataset:
    train = [folder / f"data_batch_{i}" for i in range(1, 6)]
    test = folder / "test_batch"
    missing = [p.name for p in [*train, test] if not p.exists()]
    if missing:
        raise EdgeSVPError(f"{folder} is missing {', '.join(missing)}")

    def decode():
        parts = [_read_batch(p) for p in train]
        x_test, y_test = _read_batch(test)
        return {
            "x_train": np.concatenate([x for x, _ in parts]),
            "y_train": np.concatenate([y for _, y in parts]),
            "x_test": x_test,
            "y_test": y_test,
        }

    return Dataset.from_arrays("cifar10", cached_arrays("cifar10", [*train, test], decode), CLASSES)


def load(data_dir: Path) -> Dataset:
    candidates = [
        data_dir / "cifar10" / "cifar10-jpg.zip",
        data_dir / "cifar10-jpg.zip",
        data_dir / "cifar10" / PICKLE_DIR,
        data_dir / PICKLE_DIR,
    ]
    for path in candidates:
        if path.exists():
            if path.name == PICKLE_DIR:
                return _load_pickles(path)
            dataset = load_image_folder(path, name="cifar10")
            dataset.name = "cifar10"
            return dataset
    raise DataNotFound(
        "dataset 'cifar10': did not find cifar10-jpg.zip or cifar-10-batches-py/ in "
        + " and ".join(str(p) for p in (data_dir / "cifar10", data_dir))
    )
