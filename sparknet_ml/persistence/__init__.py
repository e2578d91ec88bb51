"""MLWriter / MLReader for both stages: Spark's JSON metadata, plus for models the deploy
prototxt, a caffemodel and, when the net subtracts a mean image, ``mean.binaryproto``.
Nothing is pickled; loading checks the class the metadata names instead of importing it,
reads no file that resolves outside the saved directory, and refuses prototxt params that
name a file (their converter would read it)."""
from __future__ import annotations

import json
import os

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter

from ..net.prototxt import looks_like_path
from .caffemodel import caffemodel_bytes, mean_blob_bytes, read_caffemodel, read_mean_file

_MODEL_DIR = "model"
_DEPLOY = "deploy.prototxt"
_WEIGHTS = "weights.caffemodel"
_META = "model.json"
_MEAN = "mean.binaryproto"


def class_name(cls) -> str:
    """The fully qualified name Spark's metadata records for ``cls``."""
    return f"{cls.__module__}.{cls.__name__}"


# What model.json must hold (written by StageWriter; "crop", "resize", "mean_image" and
# "probabilities" are newer and optional).
_META_KEYS = ("layers", "output_blob", "classification", "data_top", "scale", "mean",
              "input_shape")


def _file_inside(root: str, path: str) -> str:
    """``path`` resolved (symlinks followed), after checking it is a regular file in ``root``."""
    if not os.path.lexists(path):
        raise ValueError(f"{path} is missing: {root} is not a complete saved SparkNetModel")
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root or not os.path.isfile(real):
        raise ValueError(f"{path} resolves to {real}, which is not a regular file inside "
                         f"{root}; refusing to read it")
    return real


def _check_prototxt_params(path: str, metadata: dict) -> None:
    """Refuse saved prototxt params that look like a path to an existing file: saved values
    are always text, and setting a path would read that file."""
    for name in ("netPrototxt", "solverPrototxt"):
        value = metadata["paramMap"].get(name)
        if looks_like_path(value) and os.path.exists(value):
            raise ValueError(f"{path}: param {name} names the file {value!r} instead of "
                             "holding prototxt text; refusing to read it")


class StageWriter(MLWriter):
    """Writes a SparkNetEstimator or SparkNetModel."""

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def save(self, path: str) -> None:
        """Save to ``path``; an existing local ``path`` needs ``write().overwrite()``."""
        if not self.shouldOverwrite and os.path.exists(path):
            raise ValueError(f"{path} already exists; use write().overwrite().save(path) "
                             "to replace it")
        super().save(path)

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc)
        if not hasattr(self.instance, "_weights"):
            return
        from .. import net as netlib
        meta = dict(self.instance._meta)
        directory = os.path.join(path, _MODEL_DIR)
        os.makedirs(directory, exist_ok=True)
        deploy_text = meta.pop("deploy_text")
        with open(os.path.join(directory, _DEPLOY), "w") as f:
            f.write(deploy_text)
        with open(os.path.join(directory, _WEIGHTS), "wb") as f:
            f.write(caffemodel_bytes(netlib.parse_net(deploy_text), self.instance._weights))
        meta["layers"] = {name: [list(b.shape) for b in blobs]
                          for name, blobs in self.instance._weights.items()}
        mean_image = self.instance._mean_image
        meta["mean_image"] = mean_image is not None
        if mean_image is not None:
            with open(os.path.join(directory, _MEAN), "wb") as f:
                f.write(mean_blob_bytes(mean_image))
        with open(os.path.join(directory, _META), "w") as f:
            json.dump(meta, f, indent=1)


class StageReader(MLReader):
    """Reads a stage of class ``cls``; refuses metadata that names another class."""

    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        """Load the stage saved at ``path``.

        Raises
        ------
        ValueError
            When the metadata names another class (nothing is imported), a prototxt param
            names a file, a model file is missing, damaged or resolves outside ``path``.
        """
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        if metadata["class"] != class_name(self.cls):
            raise ValueError(f"{path} holds a {metadata['class']!r}, not a "
                             f"{class_name(self.cls)!r}")
        _check_prototxt_params(path, metadata)
        instance = self.cls()
        if hasattr(instance, "_weights"):
            root = os.path.realpath(path)
            directory = os.path.join(path, _MODEL_DIR)
            meta_path = os.path.join(directory, _META)
            with open(_file_inside(root, meta_path)) as f:
                try:
                    meta = json.load(f)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{meta_path} is damaged (not JSON: {err})") from None
            missing = [key for key in _META_KEYS if not isinstance(meta, dict) or key not in meta]
            if missing:
                raise ValueError(f"{meta_path} is damaged: it lacks {', '.join(missing)}")
            shapes = meta.pop("layers")
            with open(_file_inside(root, os.path.join(directory, _DEPLOY))) as f:
                meta["deploy_text"] = f.read()
            weights = read_caffemodel(_file_inside(root, os.path.join(directory, _WEIGHTS)))
            found = {name: [list(b.shape) for b in blobs] for name, blobs in weights.items()}
            if found != shapes:
                raise ValueError(f"{directory}/{_WEIGHTS} does not match {_META}: "
                                 f"layers {sorted(found)} vs {sorted(shapes)}")
            mean_image = None
            if meta.pop("mean_image", False):
                mean_image = read_mean_file(_file_inside(root, os.path.join(directory, _MEAN)))
            instance._weights, instance._meta = weights, meta
            instance._mean_image = mean_image
        DefaultParamsReader.getAndSetParams(instance, metadata)
        instance._resetUid(metadata["uid"])
        return instance
