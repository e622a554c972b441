"""scikit-learn's digits: 1,797 real 8x8 handwritten digits that ship inside its wheel."""

import numpy as np

from edge_svp.data.dataset import Dataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the split is fixed; the training seed does not move it


def load(data_dir=None) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # pixel values are 0..16; store them as uint8 0..255 like every other image dataset
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):  # stratified: the same share of every class in test
        idx = np.flatnonzero(labels == c)
        test[rng.choice(idx, int(round(len(idx) * TEST_FRACTION)), replace=False)] = True
    arrays = {
        "x_train": images[~test],
        "y_train": labels[~test],
        "x_test": images[test],
        "y_test": labels[test],
    }
    return Dataset.from_arrays("digits", arrays, [str(i) for i in range(10)])
