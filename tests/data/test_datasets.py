import pytest
import torch

from edge_svp.data import Preprocess, batches, load_dataset
from edge_svp.data.dataset import random_crop_flip
from edge_svp.errors import EdgeSVPError


def test_digits_ships_with_the_package():
    data = load_dataset("digits")
    assert data.x_train.dtype == torch.uint8
    assert data.input_shape == (1, 8, 8)
    assert len(data.y_train) + len(data.y_test) == 1797
    assert abs(len(data.y_test) / 1797 - 0.2) < 0.005
    # stratified: every class appears in the test split
    assert sorted(data.y_test.unique().tolist()) == list(range(10))


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(EdgeSVPError, match="unknown dataset 'minst'.*did you mean 'mnist'"):
        load_dataset("minst")


def test_missing_data_dir_is_named(tmp_path):
    with pytest.raises(EdgeSVPError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nowhere")


def test_limit_keeps_the_first_examples():
    whole = load_dataset("digits")
    data = whole.limit(100)
    assert len(data.y_train) == 100 and len(data.y_test) == len(whole.y_test)
    both = whole.limit(100, 50)
    assert torch.equal(both.x_test, whole.x_test[:50]) and torch.equal(
        both.y_train, whole.y_train[:100]
    )


def test_preprocess_normalises_to_zero_mean_unit_std():
    x = torch.randint(0, 256, (500, 3, 4, 4), dtype=torch.uint8)
    out = Preprocess.fit(x, normalize=True, augment=False)(x)
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (out.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3


def test_augmentation_only_in_training_and_keeps_shape():
    x = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    pre = Preprocess.fit(x, normalize=False, augment=True)
    assert torch.equal(pre(x), pre(x))
    torch.manual_seed(0)
    assert pre(x, train=True).shape == x.shape
    assert not torch.equal(pre(x, train=True), pre(x))


def test_crop_flip_moves_pixels_but_keeps_their_values():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(32, 1, 1, 1)
    out = random_crop_flip(x, pad=1)
    values = set(out.unique().tolist())
    assert values <= set(range(16)) | {0.0}


def test_batches_cover_every_index_once():
    seen = torch.cat(list(batches(10, 3, shuffle=True, generator=torch.Generator().manual_seed(0))))
    assert sorted(seen.tolist()) == list(range(10))


def test_real_cifar10_zip(shared_data):
    data = load_dataset("cifar10", shared_data)
    assert data.x_train.shape == (50000, 3, 32, 32)
    assert data.x_test.shape == (10000, 3, 32, 32)
    assert data.classes[:2] == ["airplane", "automobile"]
    # the fixed shuffle mixes classes, so --train-limit gets a fair sample
    assert len(data.y_train[:500].unique()) == 10
