"""Caffe's DataTransformer on numpy batches: crop, mirror, mean (image or per channel), scale.

Pure numpy, no Caffe and no Spark: the same code feeds training (random crops and flips),
validation and scoring (center crops) in Spark tasks, on the driver and in unit tests.

It follows ``src/caffe/data_transformer.cpp`` (``Transform(const Datum&, ...)``) element for
element: ``top = (x[c, h_off + h, w_off + w] - mean) * scale``, written at column
``width - 1 - w`` when mirrored, where ``mean`` is the mean image at the *uncropped,
unmirrored* position (``mean[c, h_off + h, w_off + w]``) or ``mean_value[c]``. TRAIN crops at a
uniformly drawn offset in ``[0, H - crop_h]`` x ``[0, W - crop_w]`` and mirrors with p = 0.5;
TEST crops at ``((H - crop_h) // 2, (W - crop_w) // 2)`` and never mirrors. Caffe draws its
offsets from its own RNG; here they come from a numpy generator the caller seeds from
(seed, partition, round), so a round stays a pure function of its inputs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Transform:
    """One phase's ``transform_param``, resolved (the mean file already read). Equal and
    hashed by value (the mean image by its digest), so specs holding one key caches.

    Attributes
    ----------
    scale : float
        Multiplies ``x - mean``.
    mean_values : tuple of float
        One value per channel (or one for all); empty for none.
    mean_image : ndarray of float32, shape (C, H, W), or None
        The mean of the stored (uncropped) example, from a ``.binaryproto``.
    crop : (int, int) or None
        ``(crop_h, crop_w)``; None keeps the whole example.
    mirror : bool
        Random horizontal flips (training only).
    """

    scale: float = 1.0
    mean_values: tuple[float, ...] = ()
    mean_image: np.ndarray | None = None
    crop: tuple[int, int] | None = None
    mirror: bool = False

    def __post_init__(self):
        # The mean image's digest, once: specs holding a transform are hashed per batch.
        digest = (None if self.mean_image is None else hashlib.sha256(
            np.ascontiguousarray(self.mean_image, np.float32)).hexdigest())
        object.__setattr__(self, "_mean_digest", digest)

    @property
    def random(self) -> bool:
        """Whether training draws per-example parameters (crop offsets or flips)."""
        return self.crop is not None or self.mirror

    def __eq__(self, other) -> bool:
        return isinstance(other, Transform) and self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash(json.dumps(self.describe(), sort_keys=True))

    def describe(self) -> dict:
        """A JSON-simple summary, the mean image by its sha256 (checkpoint signatures)."""
        return {"scale": self.scale, "mean_values": list(self.mean_values),
                "mean_image": self._mean_digest, "crop": None if self.crop is None else list(self.crop),
                "mirror": self.mirror}

    def output_shape(self, input_shape) -> tuple[int, ...]:
        """The shape of one transformed example: ``input_shape`` with H, W cropped."""
        shape = tuple(int(d) for d in input_shape)
        return shape if self.crop is None else (*shape[:-2], *self.crop)

    def draw(self, rng: np.random.Generator, n: int, input_shape) -> tuple[np.ndarray, np.ndarray]:
        """Training parameters of ``n`` examples: ``(offsets (n, 2), flips (n,) bool)``.

        Offsets are uniform over every position the crop fits (Caffe's
        ``Rand(H - crop_h + 1)``), flips p = 0.5 when ``mirror``.
        """
        offsets = np.zeros((n, 2), np.int64)
        if self.crop is not None:
            height, width = input_shape[-2:]
            offsets[:, 0] = rng.integers(0, height - self.crop[0] + 1, n)
            offsets[:, 1] = rng.integers(0, width - self.crop[1] + 1, n)
        flips = rng.integers(0, 2, n).astype(bool) if self.mirror else np.zeros(n, bool)
        return offsets, flips

    def center(self, input_shape) -> tuple[int, int]:
        """The TEST-phase crop offset ``((H - crop_h) // 2, (W - crop_w) // 2)``."""
        if self.crop is None:
            return 0, 0
        height, width = input_shape[-2:]
        return (height - self.crop[0]) // 2, (width - self.crop[1]) // 2

    def apply(self, x: np.ndarray, rows: np.ndarray | None = None,
              offsets: np.ndarray | None = None, flips: np.ndarray | None = None,
              out: np.ndarray | None = None) -> np.ndarray:
        """Transform the examples ``x[rows]`` (uint8 or float32) into a float32 batch.

        Parameters
        ----------
        x : ndarray, shape (N, *input_shape)
            Stored examples (e.g. a memory-mapped block); only the crop windows are read.
        rows : ndarray of int, optional
            The batch's rows of ``x``; by default all of them.
        offsets, flips : ndarray, optional
            Per-example crop offsets and flips from :meth:`draw` (training); by default the
            center crop, no flip (validation and scoring).
        out : ndarray, optional
            Where to write (e.g. a net's input blob), shape (n, *output_shape).
        """
        n = len(x) if rows is None else len(rows)
        shape = self.output_shape(x.shape[1:])
        out = np.empty((n, *shape), np.float32) if out is None else out
        if flips is None and offsets is None:  # one window for the batch: numpy slices it
            window = ...
            if self.crop is not None:
                h, w = self.center(x.shape[1:])
                window = (..., slice(h, h + self.crop[0]), slice(w, w + self.crop[1]))
            out[...] = (x if rows is None else x[rows])[window]
            if self.mean_image is not None:
                out -= self.mean_image[window]
        else:
            crop_h, crop_w = shape[-2:]
            center = self.center(x.shape[1:])
            for i in range(n):
                h, w = (int(offsets[i, 0]), int(offsets[i, 1])) if offsets is not None else center
                window = (..., slice(h, h + crop_h), slice(w, w + crop_w))
                flip = flips is not None and flips[i]
                example = x[i if rows is None else rows[i]][window]
                out[i] = example[..., ::-1] if flip else example
                if self.mean_image is not None:
                    mean = self.mean_image[window]
                    out[i] -= mean[..., ::-1] if flip else mean
        if self.mean_values:
            out -= np.asarray(self.mean_values, np.float32).reshape((1, -1) + (1,) * (out.ndim - 2))
        if self.scale != 1.0:
            out *= np.float32(self.scale)
        return out
