"""Users' own data on disk, recognized by content when ``recipe.dataset`` is a path.

- ``.npz`` file: arrays ``X_train, y_train, X_test, y_test`` (integer y: classification; float y: regression),
  loaded as stored (``allow_pickle=False``: loading never runs code).
- IDX folder (MNIST, Fashion-MNIST): ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz`` (a ``.`` for the last
  ``-`` is accepted too). Headers are validated (magic, type code, dimensions, exact file size, one label
  per image). Images [1, H, W]; unsigned bytes scaled to [0, 1], other IDX types kept as stored.
- CIFAR-10 binary folder: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``, records of
  1 label byte + 3,072 pixel bytes; CIFAR-100: ``train.bin`` and ``test.bin``, records of 2 label bytes
  (coarse, fine) + 3,072 pixels, the FINE label used (100 classes). Images [3, 32, 32] in [0, 1].
- image folder: ``root/train/<class>/*.png|jpg|jpeg|bmp|gif|tif|tiff|webp`` and ``root/test/<class>/...``
  (classes = subfolder names, sorted, the same in both), or ``root/<class>/...`` without a split, which is
  then split 80/20 stratified with the task seed. All images must have one size; they are read in grayscale
  [1, H, W] when every image is grayscale, else RGB [3, H, W], in [0, 1].

Image formats give image-shaped inputs [C, H, W]: a CNN takes them as they are and an MLP flattens them.
Files are read in sorted order, so the same files give the same bits.
"""

from __future__ import annotations

import gzip
import os
import zipfile

import numpy as np
from PIL import Image, UnidentifiedImageError

from zoo.datasets.base import Arrays
from zoo.errors import ZooError

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
CIFAR10_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
CIFAR100_FILES = ("train.bin", "test.bin")
CIFAR_PIXELS = 3 * 32 * 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")

WHAT_IS_LOOKED_FOR = (
    "an .npz file (X_train, y_train, X_test, y_test), a folder of IDX files (train-images-idx3-ubyte,"
    " train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each may end .gz), a folder of"
    " CIFAR binary batches (data_batch_1.bin..data_batch_5.bin + test_batch.bin, or train.bin + test.bin), or"
    " an image folder (train/<class>/*.png and test/<class>/*.png, or <class>/*.png)"
)


# ---------------------------------------------------------------------------------------------------- .npz
def npz_arrays(path: str) -> Arrays:
    """The four arrays of a user's .npz file, checked (one-line errors naming the file)."""
    if not os.path.exists(path):
        raise ZooError(f"dataset file {path!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ZooError(
                f"dataset file {path!r} holds a single .npy array, not an .npz archive with X_train,"
                " y_train, X_test, y_test (write it with numpy.savez)"
            )
        with loaded as f:
            missing = [k for k in ("X_train", "y_train", "X_test", "y_test") if k not in f.files]
            if missing:
                raise ZooError(f"dataset file {path!r} lacks arrays {missing} (needs X_train, y_train, X_test, y_test)")
            X_tr, y_tr, X_te, y_te = (np.asarray(f[k]) for k in ("X_train", "y_train", "X_test", "y_test"))
    except ZooError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ZooError(f"dataset file {path!r} is not a readable .npz file ({e.__class__.__name__}: {e})") from None
    for X, y, part in ((X_tr, y_tr, "train"), (X_te, y_te, "test")):
        if X.ndim < 2 or y.ndim < 1:
            raise ZooError(
                f"dataset file {path!r}: X_{part} must be [rows, features...] and y_{part} [rows] or"
                f" [rows, k], got shapes {X.shape} and {y.shape}"
            )
        if len(X) != len(y) or len(X) == 0:
            raise ZooError(f"dataset file {path!r}: X_{part} has {len(X)} rows but y_{part} has {len(y)}")
        if X.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
            raise ZooError(f"dataset file {path!r}: arrays must be numeric, got {X.dtype} and {y.dtype}")
    if X_tr.shape[1:] != X_te.shape[1:]:
        raise ZooError(f"dataset file {path!r}: X_train rows {X_tr.shape[1:]} differ from X_test rows {X_te.shape[1:]}")
    regression = y_tr.dtype.kind == "f" or y_te.dtype.kind == "f"
    if not regression and (y_tr.ndim != 1 or y_te.ndim != 1):
        raise ZooError(
            f"dataset file {path!r}: integer labels must be one per row ([rows]), got shapes"
            f" {y_tr.shape} and {y_te.shape} (float y means regression)"
        )
    return Arrays(X_tr, X_te, y_tr, y_te, regression)


# ---------------------------------------------------------------------------------------------------- IDX
def _idx_path(folder: str, stem: str) -> str | None:
    """The file of one IDX stem in ``folder`` (plain before .gz; ``train-images.idx3-ubyte`` spelling too)."""
    dotted = stem[::-1].replace("-", ".", 1)[::-1]
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def read_idx(path: str) -> np.ndarray:
    """The array of one IDX file (optionally gzipped): validated magic, type code, dimensions and size."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (OSError, EOFError) as e:
        raise ZooError(f"IDX file {path!r} cannot be read ({e.__class__.__name__}: {e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise ZooError(
            f"IDX file {path!r} has no IDX header (magic 0x{raw[:4].hex() or 'empty'}; expected 00 00, a type"
            " code 08/09/0B/0C/0D/0E and a dimension count)"
        )
    dtype, ndim = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ZooError(f"IDX file {path!r} is truncated inside its header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = head + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ZooError(
            f"IDX file {path!r} is {what}: dimensions {list(dims)} of {dtype.name} need {expected:,} bytes,"
            f" the file has {len(raw):,}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims).astype(dtype.newbyteorder("="))


def idx_arrays(folder: str) -> Arrays:
    """MNIST / Fashion-MNIST IDX files of a folder: images [N, 1, H, W] (bytes in [0, 1]), labels [N]."""
    paths = {k: _idx_path(folder, stem) for k, stem in IDX_FILES.items()}
    missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise ZooError(f"IDX folder {folder!r} lacks {', '.join(missing)} (each may end .gz)")
    out = {}
    for part in ("train", "test"):
        ip, lp = paths[f"{part}_images"], paths[f"{part}_labels"]
        assert ip is not None and lp is not None
        images, labels = read_idx(ip), read_idx(lp)
        if images.ndim != 3:
            raise ZooError(f"IDX file {ip!r} holds {images.ndim}-d data {images.shape}; images are [N, rows, columns]")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ZooError(f"IDX file {lp!r} holds {labels.dtype} {labels.shape}; labels are integers [N]")
        if len(images) != len(labels) or len(images) == 0:
            raise ZooError(f"IDX file {lp!r} has {len(labels):,} labels but {ip!r} has {len(images):,} images")
        X = images[:, None].astype(np.float32)
        out[part] = (X / 255.0 if images.dtype == np.uint8 else X, labels.astype(np.int64))
    if out["train"][0].shape[1:] != out["test"][0].shape[1:]:
        raise ZooError(
            f"IDX folder {folder!r}: training images are {out['train'][0].shape[2:]}, test images"
            f" {out['test'][0].shape[2:]}"
        )
    return Arrays(out["train"][0], out["test"][0], out["train"][1], out["test"][1])


# ---------------------------------------------------------------------------------------------------- CIFAR
def _cifar_records(path: str, label_bytes: int) -> np.ndarray:
    """[n, label_bytes + 3072] uint8 records of one CIFAR binary file (its size checked)."""
    record = label_bytes + CIFAR_PIXELS
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ZooError(f"CIFAR file {path!r} cannot be read ({e})") from None
    if len(raw) == 0 or len(raw) % record:
        raise ZooError(
            f"CIFAR file {path!r} has {len(raw):,} bytes, not a whole number of {record}-byte records"
            f" ({label_bytes} label byte{'s' if label_bytes > 1 else ''} + {CIFAR_PIXELS} pixels)"
        )
    return raw.reshape(-1, record)


def cifar_arrays(folder: str) -> Arrays:
    """CIFAR-10 (6 batch files) or CIFAR-100 (train.bin, test.bin, fine labels) binary batches of a folder."""
    if all(os.path.isfile(os.path.join(folder, f)) for f in CIFAR100_FILES):
        files, label_bytes, classes = {"train": ["train.bin"], "test": ["test.bin"]}, 2, 100
    else:
        missing = [f for f in CIFAR10_FILES if not os.path.isfile(os.path.join(folder, f))]
        if missing:
            raise ZooError(
                f"CIFAR folder {folder!r} lacks {', '.join(missing)} (CIFAR-10: data_batch_1..5.bin and"
                " test_batch.bin; CIFAR-100: train.bin and test.bin)"
            )
        files, label_bytes, classes = {"train": list(CIFAR10_FILES[:5]), "test": ["test_batch.bin"]}, 1, 10
    out = {}
    for part, names in files.items():
        Xs, ys = [], []
        for name in names:
            path = os.path.join(folder, name)
            r = _cifar_records(path, label_bytes)
            labels = r[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: byte 0 coarse, byte 1 fine
            if labels.max() >= classes or (label_bytes == 2 and r[:, 0].max() >= 20):
                raise ZooError(f"CIFAR file {path!r} has label {int(labels.max())}: not CIFAR-{classes} data")
            Xs.append(r[:, label_bytes:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
            ys.append(labels)
        out[part] = (np.concatenate(Xs), np.concatenate(ys))
    return Arrays(out["train"][0], out["test"][0], out["train"][1], out["test"][1], num_outputs=classes)


# ---------------------------------------------------------------------------------------------------- images
def _class_folders(root: str) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, e.name)
        for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_SUFFIXES)
    )


def _has_images(root: str) -> bool:
    return any(_image_files(os.path.join(root, c)) for c in _class_folders(root))


def _read_images(root: str, classes: list[str]) -> tuple[list[Image.Image], list[int], list[str]]:
    """Every image of ``root/<class>/`` (loaded, in sorted order), its class index and file."""
    images, labels, files = [], [], []
    for i, c in enumerate(classes):
        paths = _image_files(os.path.join(root, c))
        if not paths:
            raise ZooError(f"image folder {os.path.join(root, c)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for p in paths:
            try:
                with Image.open(p) as im:
                    im.load()
                    images.append(im.copy())
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise ZooError(f"image {p!r} cannot be read ({e.__class__.__name__}: {e})") from None
            labels.append(i)
            files.append(p)
    return images, labels, files


def _to_array(images: list[Image.Image], files: list[str], mode: str, first: str, size: tuple) -> np.ndarray:
    """[N, C, H, W] float32 in [0, 1] of images all of ``size`` (that of the image ``first``), in ``mode``."""
    out = np.empty((len(images), 1 if mode == "L" else 3, size[1], size[0]), dtype=np.float32)
    for k, (im, path) in enumerate(zip(images, files)):
        if im.size != size:
            raise ZooError(
                f"image {path!r} is {im.size[0]}x{im.size[1]} but {files[0]!r} is {size[0]}x{size[1]};"
                " all images of a dataset must have one size"
            )
        a = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
        out[k] = a[None] if mode == "L" else a.transpose(2, 0, 1)
    return out


def image_folder_arrays(root: str, seed: int) -> Arrays:
    """An image-folder dataset: ``train/`` and ``test/`` class folders, or class folders split with ``seed``."""
    split = all(os.path.isdir(os.path.join(root, p)) for p in ("train", "test"))
    if split:
        parts = {p: os.path.join(root, p) for p in ("train", "test")}
        classes = _class_folders(parts["train"])
        test_classes = _class_folders(parts["test"])
        if classes != test_classes:
            raise ZooError(
                f"image folder {root!r}: train/ has classes {classes[:10]} but test/ has {test_classes[:10]};"
                " both need the same class subfolders"
            )
        read = {p: _read_images(d, classes) for p, d in parts.items()}
    else:
        classes = _class_folders(root)
        read = {"all": _read_images(root, classes)}
    if len(classes) < 2:
        raise ZooError(f"image folder {root!r} has {len(classes)} class subfolder; a classification task needs 2+")
    every = [im for images, _, _ in read.values() for im in images]
    mode = "L" if all(im.mode in GRAY_MODES for im in every) else "RGB"
    first = next(iter(read.values()))[2][0]
    arrays = {
        p: (_to_array(images, files, mode, first, every[0].size), labels) for p, (images, labels, files) in read.items()
    }
    if split:
        (X_tr, y_tr), (X_te, y_te) = arrays["train"], arrays["test"]
        return Arrays(X_tr, X_te, np.asarray(y_tr), np.asarray(y_te), num_outputs=len(classes))
    from sklearn.model_selection import train_test_split

    X, y = arrays["all"][0], np.asarray(arrays["all"][1])
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        lone = classes[int(counts.argmin())]
        raise ZooError(
            f"image folder {root!r}: class {lone!r} has {counts.min()} image; splitting into train and test needs"
            " 2+ per class (or give train/ and test/ folders)"
        )
    n_test = max(len(classes), int(round(0.2 * len(y))))
    if len(y) - n_test < len(classes):
        raise ZooError(f"image folder {root!r}: {len(y)} images are too few to split {len(classes)} classes")
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=n_test, random_state=seed, stratify=y)
    return Arrays(X_tr, X_te, y_tr, y_te, num_outputs=len(classes))


# ---------------------------------------------------------------------------------------------------- by content
def detect_format(path: str) -> str:
    """Which on-disk format ``path`` holds: "npz", "idx", "cifar" or "images" (one-line error otherwise)."""
    if not os.path.exists(path):
        raise ZooError(f"dataset path {path!r} does not exist (looked for {WHAT_IS_LOOKED_FOR})")
    if os.path.isfile(path):
        if path.endswith(".npz"):
            return "npz"
        raise ZooError(f"dataset file {path!r} is not an .npz file; a dataset path is {WHAT_IS_LOOKED_FOR}")
    if not os.path.isdir(path):
        raise ZooError(f"dataset path {path!r} is neither a file nor a folder")
    names = set(os.listdir(path))
    if any(_idx_path(path, stem) for stem in IDX_FILES.values()):
        return "idx"
    if names & set(CIFAR10_FILES + CIFAR100_FILES):
        return "cifar"
    split = all(os.path.isdir(os.path.join(path, p)) for p in ("train", "test"))
    if (split and _has_images(os.path.join(path, "train"))) or (not split and _has_images(path)):
        return "images"
    raise ZooError(f"dataset folder {path!r} holds no dataset this reads; looked for {WHAT_IS_LOOKED_FOR}")


def path_arrays(path: str, seed: int) -> Arrays:
    """The arrays of a dataset on disk, in whichever format its content shows (``seed``: image folders without
    a train/test split are split with it; every other format carries its own split)."""
    fmt = detect_format(path)
    if fmt == "npz":
        return npz_arrays(path)
    if fmt == "idx":
        return idx_arrays(path)
    if fmt == "cifar":
        return cifar_arrays(path)
    return image_folder_arrays(path, seed)
