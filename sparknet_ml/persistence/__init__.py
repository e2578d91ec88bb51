"""MLWriter / MLReader for both stages: Spark's JSON metadata, plus for models the deploy
prototxt, a caffemodel and, when the net subtracts a mean image, ``mean.binaryproto``.
Every file goes through :mod:`sparknet_ml.storage`, so any location the SparkSession reaches
works (hdfs://, s3a://, abfss://, sftp://, local). A save writes a hidden sibling folder and
renames it into place, so a failed or killed save never leaves a folder that loads as another
model. Nothing is pickled; loading checks the class the metadata names instead of importing
it, reads no file through a link or outside the saved folder, checks sizes before reading,
and refuses prototxt params that name a file (their converter would read it)."""
from __future__ import annotations

import json

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter

from .. import storage
from ..net.prototxt import MAX_PROTOTXT_BYTES, looks_like_path
from .caffemodel import caffemodel_bytes, mean_blob_bytes, read_caffemodel, read_mean_file

_MODEL_DIR = "model"
_DEPLOY = "deploy.prototxt"
_WEIGHTS = "weights.caffemodel"
_META = "model.json"
_MEAN = "mean.binaryproto"

MAX_MODEL_JSON_BYTES = 16 * 2 ** 20
"""Largest ``model.json`` read (16 MiB; a GoogLeNet model's is 12 kB)."""


def class_name(cls) -> str:
    """The fully qualified name Spark's metadata records for ``cls``."""
    return f"{cls.__module__}.{cls.__name__}"


# What model.json must hold (written by StageWriter; "crop", "resize", "mean_image" and
# "probabilities" are newer and optional).
_META_KEYS = ("layers", "output_blob", "classification", "data_top", "scale", "mean",
              "input_shape")


def _check_prototxt_params(path: str, metadata: dict) -> None:
    """Refuse saved prototxt params that look like a path to an existing file: saved values
    are always text, and setting a path would read that file."""
    for name in ("netPrototxt", "solverPrototxt"):
        value = metadata["paramMap"].get(name)
        if looks_like_path(value) and storage.is_file(value):
            raise ValueError(f"{path}: param {name} names the file {value!r} instead of "
                             "holding prototxt text; refusing to read it")


def is_saved_stage(uri: str) -> bool:
    """Whether ``uri`` is a folder a Spark ML writer saved (it has a ``metadata`` folder)."""
    return storage.is_dir(storage.join(uri, "metadata"))


def is_caffe_model_folder(uri: str) -> bool:
    """Whether ``uri`` is a folder holding only what :func:`write_model_files` writes."""
    return storage.is_dir(uri) and set(storage.list_names(uri)) <= {_DEPLOY, _WEIGHTS, _MEAN}


def save_caffe_model(directory: str, deploy_text: str, weights, mean_image,
                     overwrite: bool) -> None:
    """:func:`write_model_files` into ``directory``, staged and renamed into place; an
    existing ``directory`` is replaced only with ``overwrite`` and only when it holds
    nothing but those files.

    Raises
    ------
    sparknet_ml.storage.StorageError
        When ``directory`` exists and may not be replaced, or cannot be written.
    """
    with storage.replacing(directory, overwrite, how="overwrite=True",
                           ours=is_caffe_model_folder,
                           what=f"a folder of {_DEPLOY} and {_WEIGHTS}") as staged:
        write_model_files(staged, deploy_text, weights, mean_image)


def write_model_files(directory: str, deploy_text: str, weights, mean_image) -> None:
    """``deploy.prototxt``, ``weights.caffemodel`` and, with a mean image,
    ``mean.binaryproto`` in ``directory``: the files plain pycaffe loads."""
    from .. import net as netlib
    storage.write_bytes(storage.join(directory, _DEPLOY), deploy_text.encode())
    storage.write_bytes(storage.join(directory, _WEIGHTS),
                        caffemodel_bytes(netlib.parse_net(deploy_text), weights))
    if mean_image is not None:
        storage.write_bytes(storage.join(directory, _MEAN), mean_blob_bytes(mean_image))


class StageWriter(MLWriter):
    """Writes a SparkNetEstimator or SparkNetModel."""

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def save(self, path: str) -> None:
        """Save to ``path`` (any storage location); an existing ``path`` needs
        ``write().overwrite()``, must be a saved stage, and is replaced only once the new
        folder is complete.

        Raises
        ------
        sparknet_ml.storage.StorageError
            When ``path`` exists without overwrite, is not a saved stage, or cannot be
            written.
        """
        with storage.replacing(path, self.shouldOverwrite, ours=is_saved_stage,
                               what="a saved Spark ML stage (no metadata folder)") as staged:
            self.saveImpl(staged)

    def saveImpl(self, path: str) -> None:
        """Model files first, Spark's metadata last."""
        if hasattr(self.instance, "_weights"):
            meta = dict(self.instance._meta)
            directory = storage.join(path, _MODEL_DIR)
            write_model_files(directory, meta.pop("deploy_text"), self.instance._weights,
                              self.instance._mean_image)
            meta["layers"] = {name: [list(b.shape) for b in blobs]
                              for name, blobs in self.instance._weights.items()}
            meta["mean_image"] = self.instance._mean_image is not None
            storage.write_bytes(storage.join(directory, _META),
                                json.dumps(meta, indent=1).encode())
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession)


def _first_difference(found: dict, expected: dict) -> str | None:
    """Where the blob shapes of the caffemodel (``found``) and of model.json (``expected``),
    both ``{layer: [shape, ...]}``, first differ, in the net's order: a layer or blob that
    only one of them has, or a blob's two shapes; None where they hold the same."""
    for name in [*expected, *(name for name in found if name not in expected)]:
        if name not in found or name not in expected:
            return f"layer {name!r} is in {_META if name in expected else _WEIGHTS} only"
        for index in range(max(len(found[name]), len(expected[name]))):
            ours, theirs = found[name][index:index + 1], expected[name][index:index + 1]
            if ours != theirs:
                where = f"layer {name!r} blob {index}"
                if not (ours and theirs):
                    return f"{where} is in {_WEIGHTS if ours else _META} only"
                return f"{where} has shape {ours[0]} in {_WEIGHTS}, {theirs[0]} in {_META}"
    return None


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
        if not storage.is_dir(path):
            raise storage.StorageError(f"cannot load {path}: no such folder")
        if not storage.is_dir(storage.join(path, "metadata")):
            raise storage.StorageError(
                f"cannot load {path}: not a saved stage (no metadata folder there)")
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        if metadata["class"] != class_name(self.cls):
            raise ValueError(f"{path} holds a {metadata['class']!r}, not a "
                             f"{class_name(self.cls)!r}")
        _check_prototxt_params(path, metadata)
        instance = self.cls()
        if hasattr(instance, "_weights"):
            directory = storage.join(path, _MODEL_DIR)
            meta_path = storage.join(directory, _META)
            try:
                meta = json.loads(storage.read_bytes(meta_path, MAX_MODEL_JSON_BYTES,
                                                     "MAX_MODEL_JSON_BYTES", inside=path))
            except json.JSONDecodeError as err:
                raise ValueError(f"{meta_path} is damaged (not JSON: {err})") from None
            missing = [key for key in _META_KEYS if not isinstance(meta, dict) or key not in meta]
            if missing:
                raise ValueError(f"{meta_path} is damaged: it lacks {', '.join(missing)}")
            shapes = meta.pop("layers")
            meta["deploy_text"] = storage.read_bytes(
                storage.join(directory, _DEPLOY), MAX_PROTOTXT_BYTES, "MAX_PROTOTXT_BYTES",
                inside=path).decode()
            weights = read_caffemodel(storage.join(directory, _WEIGHTS), inside=path)
            difference = _first_difference(
                {name: [list(b.shape) for b in blobs] for name, blobs in weights.items()}, shapes)
            if difference:
                raise ValueError(f"{directory}/{_WEIGHTS} does not match {_META}: {difference}")
            mean_image = None
            if meta.pop("mean_image", False):
                mean_image = read_mean_file(storage.join(directory, _MEAN), inside=path)
            instance._weights, instance._meta = weights, meta
            instance._mean_image = mean_image
        DefaultParamsReader.getAndSetParams(instance, metadata)
        instance._resetUid(metadata["uid"])
        return instance
