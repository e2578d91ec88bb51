"""Image resizing as Caffe's ImageData layer does it (OpenCV's bilinear ``cv::resize``), in
numpy: no image library is needed on the executors."""
from __future__ import annotations

import numpy as np


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An (h, w, c) uint8 image resized like OpenCV's ``INTER_LINEAR`` (half-pixel centres,
    edges clamped), rounded back to uint8.

    Examples
    --------
    >>> resize_bilinear(np.array([[[0], [255]]], np.uint8), 1, 4)[0, :, 0].tolist()
    [0, 64, 191, 255]
    """
    def axis(n_in, n_out):
        position = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (position - low).astype(np.float32)

    (top, bottom, dy), (left, right, dx) = axis(image.shape[0], height), axis(image.shape[1], width)
    x = image.astype(np.float32)
    rows = x[top] * (1 - dy)[:, None, None] + x[bottom] * dy[:, None, None]
    out = rows[:, left] * (1 - dx)[None, :, None] + rows[:, right] * dx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
