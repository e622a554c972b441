"""Datasets by name. A new dataset is one loader function plus one entry in DATASETS."""

import os
import warnings
from pathlib import Path

import torch

from edge_svp.config import DataConfig
from edge_svp.data import cifar10, digits, mnist
from edge_svp.data.dataset import Dataset, Preprocess
from edge_svp.data.imagefolder import load_image_folder
from edge_svp.errors import DataNotFound, DataWarning, EdgeSVPError, unknown

DATASETS = {
    "digits": digits.load,
    "mnist": mnist.load_mnist,
    "fashion-mnist": mnist.load_fashion_mnist,
    "cifar10": cifar10.load,
    "imagefolder": load_image_folder,  # --data-dir is the folder or zip itself
}
NEEDS_NO_FILES = {"digits"}


def load_data(data: DataConfig) -> tuple[Dataset, Preprocess]:
    """The dataset a run's [data] section names, limited as it says, and its preprocessing
    fitted on the training split."""
    dataset = load_dataset(data.dataset, data.data_dir).limit(data.train_limit, data.test_limit)
    return dataset, Preprocess.fit(dataset.x_train, data.normalize, data.augment)


# What the datasets with files look like, for a plan without them (`edge-svp plan` on a
# laptop that lacks the data): input shape, classes, training and test examples.
SHAPES = {
    "mnist": ((1, 28, 28), 10, 60_000, 10_000),
    "fashion-mnist": ((1, 28, 28), 10, 60_000, 10_000),
    "cifar10": ((3, 32, 32), 10, 50_000, 10_000),
}


def synthetic_data(data: DataConfig) -> tuple[Dataset, Preprocess]:
    """Random uint8 images of the shape and number the [data] section's dataset has (one
    image in memory, repeated as views), and their preprocessing: what a plan needs."""
    shape, classes, train, test = SHAPES[data.dataset]
    image = torch.randint(0, 256, (1, *shape), dtype=torch.uint8)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return image.expand(n, *shape), torch.arange(n) % classes

    dataset = Dataset(f"{data.dataset} (synthetic)", *split(train), *split(test),
                      [str(c) for c in range(classes)])  # fmt: skip
    dataset = dataset.limit(data.train_limit, data.test_limit)
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
        raise DataNotFound(
            f"dataset '{name}': data directory {folder} does not exist (set --data-dir)"
        )
    return check_dataset(DATASETS[name](folder), folder)


def check_dataset(dataset: Dataset, folder: Path) -> Dataset:
    """One line for a dataset nothing can train on or measure (an empty split, a label
    outside its classes); a warning for a single class, on which accuracy means nothing."""
    where = f"dataset '{dataset.name}' in {folder}"
    for split, y in (("training", dataset.y_train), ("test", dataset.y_test)):
        if not len(y):
            raise EdgeSVPError(f"{where}: the {split} split holds no examples")
        outside = y[(y < 0) | (y >= dataset.num_classes)]
        if len(outside):
            raise EdgeSVPError(
                f"{where}: label {int(outside[0])} in the {split} split is outside its "
                f"{dataset.num_classes} classes (0 to {dataset.num_classes - 1})"
            )
    present = dataset.y_train.unique()
    if len(present) == 1:
        only = dataset.classes[int(present[0])] if dataset.classes else int(present[0])
        warnings.warn(
            f"{where}: the training split has a single class ('{only}'): every prediction "
            "is that class, and accuracy says nothing",
            DataWarning,
            stacklevel=2,
        )
    return dataset
