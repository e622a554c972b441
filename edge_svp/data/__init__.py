"""Datasets by name. A new dataset is one loader function plus one entry in DATASETS."""

import os
from pathlib import Path

from edge_svp.config import DataConfig
from edge_svp.data import cifar10, digits, idx
from edge_svp.data.dataset import Dataset, Preprocess, batches
from edge_svp.data.imagefolder import load_image_folder
from edge_svp.errors import EdgeSVPError, unknown

DATASETS = {
    "digits": digits.load,
    "mnist": idx.load_mnist,
    "fashion-mnist": idx.load_fashion_mnist,
    "cifar10": cifar10.load,
    "imagefolder": load_image_folder,  # --data-dir is the folder or zip itself
}
NEEDS_NO_FILES = {"digits"}


def load_data(data: DataConfig) -> tuple[Dataset, Preprocess]:
    """The dataset a run's [data] section names, limited as it says, and its preprocessing
    fitted on the training split."""
    dataset = load_dataset(data.dataset, data.data_dir).limit(data.train_limit, data.test_limit)
    return dataset, Preprocess.fit(dataset.x_train, data.normalize, data.augment)


def default_data_dir() -> Path:
    return Path(os.environ.get("EDGE_SVP_DATA", "data"))


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load a dataset by name; `data_dir` defaults to $EDGE_SVP_DATA or ./data."""
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    if name in NEEDS_NO_FILES:
        return DATASETS[name]()
    folder = Path(data_dir) if data_dir else default_data_dir()
    if not folder.exists():
        raise EdgeSVPError(
            f"dataset '{name}': data directory {folder} does not exist (set --data-dir)"
        )
    return DATASETS[name](folder)


__all__ = ["DATASETS", "Dataset", "Preprocess", "batches", "load_data", "load_dataset"]
