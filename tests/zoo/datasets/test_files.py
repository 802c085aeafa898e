"""Users' data on disk in the formats they have (IDX, CIFAR binary, image folders, .npz), written here in
each format and read back exactly; recognition by content; corrupt files are one-line errors."""

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from zoo import ZooError, load_dataset
from zoo.datasets import detect_format


def write_idx(path, array: np.ndarray, code: int = 0x08, gz: bool = False):
    """An IDX file as the MNIST distribution writes it: 00 00 type ndim, big-endian dims, big-endian data."""
    dtype = {0x08: ">u1", 0x0D: ">f4"}[code]
    raw = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += np.asarray(array).astype(dtype).tobytes()
    path = f"{path}.gz" if gz else str(path)
    with gzip.open(path, "wb") if gz else open(path, "wb") as f:
        f.write(raw)
    return path


def idx_folder(root, gz=False, n_train=90, n_test=30, size=(7, 6), classes=3, seed=0):
    """A small MNIST-like IDX folder whose classes are separable (class c lights row c), and its arrays."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % classes
        X = rng.integers(0, 60, size=(n, *size)).astype(np.uint8)
        X[np.arange(n), y] = 255
        write_idx(root / f"{part}-images-idx3-ubyte", X, gz=gz)
        write_idx(root / f"{part}-labels-idx1-ubyte", y.astype(np.uint8), gz=gz)
        out[part] = (X, y)
    return root, out


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_round_trips(tmp_path, gz):
    root, arrays = idx_folder(tmp_path / "mnist", gz=gz)
    assert detect_format(str(root)) == "idx"
    d = load_dataset(str(root))
    assert d.input_shape == (1, 7, 6) and d.num_outputs == 3 and d.kind == "classification"
    X, y = arrays["train"]
    assert torch.equal(d.X_train, torch.from_numpy(X[:, None].astype(np.float32) / 255.0))
    assert torch.equal(d.y_train, torch.from_numpy(y.astype(np.int64)))
    assert torch.equal(d.y_test, torch.from_numpy(arrays["t10k"][1].astype(np.int64)))
    assert d.location == str(root) and d.name == "mnist"


def test_idx_gz_and_plain_give_the_same_fingerprint_and_seed_changes_nothing(tmp_path):
    a, _ = idx_folder(tmp_path / "a", gz=False)
    b, _ = idx_folder(tmp_path / "b", gz=True)
    fa = load_dataset(str(a)).fingerprint
    assert fa == load_dataset(str(b)).fingerprint == load_dataset(str(a), seed=5).fingerprint  # its own split


def test_idx_float_images_are_kept_as_stored(tmp_path):
    root, _ = idx_folder(tmp_path / "f")
    X = np.linspace(-1, 1, 90 * 4 * 4).reshape(90, 4, 4).astype(np.float32)
    write_idx(root / "train-images-idx3-ubyte", X, code=0x0D)
    write_idx(root / "t10k-images-idx3-ubyte", X[:30], code=0x0D)
    d = load_dataset(str(root))
    assert torch.equal(d.X_train[:, 0], torch.from_numpy(X))


@pytest.mark.parametrize(
    "damage, match",
    [
        ("magic", "no IDX header"),
        ("truncate", "truncated"),
        ("count", "has 89 labels but"),
        ("missing", "lacks t10k-labels-idx1-ubyte"),
        ("gzip", "cannot be read"),
        ("labels-2d", "labels are integers"),
    ],
)
def test_corrupt_idx_files_are_one_line_errors_naming_the_file(tmp_path, damage, match):
    root, arrays = idx_folder(tmp_path / "bad")
    target = root / "train-labels-idx1-ubyte"
    if damage == "magic":
        target = root / "train-images-idx3-ubyte"
        target.write_bytes(b"\x08\x03\x00\x00" + target.read_bytes()[4:])
    elif damage == "truncate":
        target = root / "train-images-idx3-ubyte"
        target.write_bytes(target.read_bytes()[:-7])
    elif damage == "count":
        write_idx(target, arrays["train"][1][:89].astype(np.uint8))
    elif damage == "missing":
        (root / "t10k-labels-idx1-ubyte").unlink()
    elif damage == "gzip":
        target.unlink()
        target = root / "train-labels-idx1-ubyte.gz"
        target.write_bytes(b"\x1f\x8bnot gzip at all")
    elif damage == "labels-2d":
        write_idx(target, np.zeros((90, 2), dtype=np.uint8))
    with pytest.raises(ZooError, match=match) as e:
        load_dataset(str(root))
    assert "\n" not in str(e.value)
    if damage != "missing":
        assert str(target) in str(e.value)


def cifar_folder(root, hundred=False, per_file=6, seed=0):
    """CIFAR binary batches: CIFAR-10 (6 files, 1 label byte) or CIFAR-100 (2 files, coarse+fine labels)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    files = (
        ("train.bin", "test.bin")
        if hundred
        else tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
    )
    out = {}
    for k, name in enumerate(files):
        n = per_file
        pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = (np.arange(n) + k) % (100 if hundred else 10)
        labels = [(fine // 5).astype(np.uint8), fine.astype(np.uint8)] if hundred else [fine.astype(np.uint8)]
        (root / name).write_bytes(np.concatenate([np.stack(labels, 1), pixels], 1).tobytes())
        out[name] = (pixels, fine)
    return root, out


def test_cifar10_binary_round_trips(tmp_path):
    root, raw = cifar_folder(tmp_path / "cifar-10-batches-bin", per_file=10)
    assert detect_format(str(root)) == "cifar"
    d = load_dataset(str(root))
    assert d.input_shape == (3, 32, 32) and d.num_outputs == 10 and len(d.X_train) == 50 and len(d.X_test) == 10
    pixels, labels = raw["data_batch_2.bin"]
    first = d.X_train[10]  # the first record of the second batch: R plane, then G, then B, each row-major
    assert torch.equal(first, torch.from_numpy(pixels[0].reshape(3, 32, 32).astype(np.float32) / 255.0))
    assert d.y_train[10:20].tolist() == labels.tolist()
    assert d.y_test.tolist() == raw["test_batch.bin"][1].tolist()


def test_cifar100_uses_fine_labels(tmp_path):
    root, raw = cifar_folder(tmp_path / "c100", hundred=True, per_file=100)
    d = load_dataset(str(root))
    assert d.num_outputs == 100 and d.y_train.tolist() == raw["train.bin"][1].tolist()
    assert torch.equal(d.X_test[3], torch.from_numpy(raw["test.bin"][0][3].reshape(3, 32, 32) / np.float32(255)))


@pytest.mark.parametrize("damage", ["record", "missing", "label"])
def test_corrupt_cifar_files_are_errors(tmp_path, damage):
    root, _ = cifar_folder(tmp_path / "c10")
    if damage == "record":
        (root / "data_batch_3.bin").write_bytes((root / "data_batch_3.bin").read_bytes()[:-1])
        match = r"data_batch_3.bin.*not a whole number of 3073-byte records"
    elif damage == "missing":
        (root / "data_batch_4.bin").unlink()
        match = "lacks data_batch_4.bin"
    else:
        raw = bytearray((root / "test_batch.bin").read_bytes())
        raw[0] = 17
        (root / "test_batch.bin").write_bytes(bytes(raw))
        match = "test_batch.bin.*label 17"
    with pytest.raises(ZooError, match=match):
        load_dataset(str(root))


def image_folder(root, split=True, mode="L", size=(5, 4), per_class=6, classes=("cat", "dog", "emu")):
    """PNGs under root/[train|test]/<class>/; returns {path: pixel array} of what was written."""
    rng = np.random.default_rng(0)
    written = {}
    for part in ("train", "test") if split else ("",):
        for c in classes:
            folder = root / part / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
                a = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(a, mode=mode).save(folder / f"{i:02d}.png")
                written[folder / f"{i:02d}.png"] = a
    return written


def test_image_folder_with_train_and_test_round_trips(tmp_path):
    written = image_folder(tmp_path / "pets", mode="RGB")
    (tmp_path / "pets" / "train" / "cat" / "notes.txt").write_text("not an image: ignored")
    assert detect_format(str(tmp_path / "pets")) == "images"
    d = load_dataset(str(tmp_path / "pets"))
    assert d.input_shape == (3, 4, 5) and d.num_outputs == 3 and len(d.X_train) == 18 and len(d.X_test) == 18
    assert d.y_train.tolist() == [0] * 6 + [1] * 6 + [2] * 6  # classes: sorted subfolder names
    a = written[tmp_path / "pets" / "train" / "dog" / "02.png"]
    assert torch.equal(d.X_train[8], torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32) / 255.0))


def test_image_folder_without_split_is_split_stratified_with_the_task_seed(tmp_path):
    image_folder(tmp_path / "g", split=False, per_class=10)
    a, b, c = (load_dataset(str(tmp_path / "g"), seed=s) for s in (0, 0, 1))
    assert a.input_shape == (1, 4, 5) and len(a.X_train) == 24 and len(a.X_test) == 6
    assert torch.bincount(a.y_test).tolist() == [2, 2, 2]
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_mixed_grayscale_and_color_images_are_read_as_rgb(tmp_path):
    image_folder(tmp_path / "m", mode="L")
    Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8), mode="RGB").save(tmp_path / "m" / "test" / "emu" / "x.png")
    d = load_dataset(str(tmp_path / "m"))
    assert d.input_shape == (3, 4, 5)
    assert torch.equal(d.X_train[0, 0], d.X_train[0, 2])  # gray replicated into R, G and B


@pytest.mark.parametrize("damage, match", [("size", "is 7x4 but"), ("corrupt", "cannot be read"), ("classes", "same")])
def test_bad_image_folders_are_errors_naming_the_file(tmp_path, damage, match):
    image_folder(tmp_path / "b")
    bad = tmp_path / "b" / "test" / "dog" / "03.png"
    if damage == "size":
        Image.fromarray(np.zeros((4, 7), dtype=np.uint8), mode="L").save(bad)
    elif damage == "corrupt":
        bad.write_bytes(b"\x89PNG but then nothing")
    else:
        (tmp_path / "b" / "test" / "yak").mkdir()
        bad = tmp_path / "b"
    with pytest.raises(ZooError, match=match) as e:
        load_dataset(str(tmp_path / "b"))
    assert str(bad) in str(e.value)


def test_recognition_by_content_refuses_what_it_does_not_know(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "data.csv").write_text("1,2,3")
    for path in (tmp_path / "empty", tmp_path / "data.csv", tmp_path / "nothing-here"):
        with pytest.raises(ZooError, match="IDX files .*CIFAR binary batches.*image folder"):
            load_dataset(str(path))


def test_npz_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(3)
    X_tr, X_te = rng.normal(size=(12, 2, 3)).astype(np.float32), rng.normal(size=(4, 2, 3)).astype(np.float32)
    y_tr, y_te = np.arange(12) % 3, np.array([0, 1, 2, 0])
    np.savez(tmp_path / "d.npz", X_train=X_tr, y_train=y_tr, X_test=X_te, y_test=y_te)
    assert detect_format(str(tmp_path / "d.npz")) == "npz"
    d = load_dataset(str(tmp_path / "d.npz"))
    assert torch.equal(d.X_train, torch.from_numpy(X_tr)) and torch.equal(d.X_test, torch.from_numpy(X_te))
    assert d.y_train.tolist() == y_tr.tolist() and d.input_shape == (2, 3)
