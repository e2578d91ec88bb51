"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (idx files, gzip)."""
from __future__ import annotations

import gzip
import os

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_idx(path: str, magic: int, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    header = np.frombuffer(data, ">u4", count=1 + ndim)
    if header[0] != magic:
        raise ValueError(f"{path}: not an idx file of {ndim} dimension(s) (magic {header[0]:#x})")
    shape = tuple(int(d) for d in header[1:])
    body = np.frombuffer(data, np.uint8, offset=4 * (1 + ndim))
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} bytes of data for shape {shape}")
    return body.reshape(shape)


def load(split: str = "train", directory: str = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Load a Fashion-MNIST split.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test examples.
    directory : str
        Folder holding the four idx ``.gz`` files (Debian: ``apt-get install
        dataset-fashion-mnist``).

    Returns
    -------
    images : ndarray of uint8, shape (n, 28, 28)
    labels : ndarray of uint8, shape (n,), classes 0-9
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    images_file, labels_file = (os.path.join(directory, name) for name in _FILES[split])
    for path in (images_file, labels_file):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: install Debian's dataset-fashion-mnist")
    images = _read_idx(images_file, 0x803, 3)
    labels = _read_idx(labels_file, 0x801, 1)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels in {directory}")
    return images, labels
