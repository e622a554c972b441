"""MNIST and Fashion-MNIST from their IDX files (gzip-compressed or raw)."""

from pathlib import Path

import numpy as np

from edge_svp.data.cache import cached_arrays
from edge_svp.data.dataset import Dataset
from edge_svp.data.idx import read_idx
from edge_svp.errors import DataNotFound, EdgeSVPError

FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]  # fmt: skip


def find_files(name: str, data_dir: Path, subdirs: list[str]) -> dict[str, Path]:
    looked = []
    for folder in [data_dir / s for s in subdirs] + [data_dir]:
        found = {}
        for key, stem in FILES.items():
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.exists():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return found
        looked.append(str(folder))
    raise DataNotFound(
        f"dataset '{name}': did not find {FILES['x_train']}[.gz] and the other 3 IDX files "
        f"in {', '.join(looked)}"
    )


def load_idx_dataset(name: str, data_dir: Path, subdirs: list[str], classes) -> Dataset:
    files = find_files(name, data_dir, subdirs)

    def decode():
        arrays = {key: read_idx(path) for key, path in files.items()}
        for split in ("train", "test"):
            x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise EdgeSVPError(
                    f"dataset '{name}': {split} images {x.shape} and labels {y.shape} do not match"
                )
            arrays[f"x_{split}"] = x[:, None]  # add the channel axis
            arrays[f"y_{split}"] = y.astype(np.int64)
        return arrays

    arrays = cached_arrays(name, list(files.values()), decode)
    return Dataset.from_arrays(name, arrays, classes)


def load_mnist(data_dir: Path) -> Dataset:
    return load_idx_dataset("mnist", data_dir, ["mnist", "MNIST"], [str(i) for i in range(10)])


def load_fashion_mnist(data_dir: Path) -> Dataset:
    subdirs = ["fashion-mnist", "fashion_mnist", "FashionMNIST"]
    return load_idx_dataset("fashion-mnist", data_dir, subdirs, FASHION_CLASSES)
