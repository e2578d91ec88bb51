"""MLWriter / MLReader for both stages: Spark's JSON metadata, plus for models the deploy
prototxt and a caffemodel. Nothing is pickled; loading checks the class the metadata names
instead of importing it."""
from __future__ import annotations

import json
import os

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter

from .caffemodel import caffemodel_bytes, read_caffemodel

_MODEL_DIR = "model"
_DEPLOY = "deploy.prototxt"
_WEIGHTS = "weights.caffemodel"
_META = "model.json"


def class_name(cls) -> str:
    """The fully qualified name Spark's metadata records for ``cls``."""
    return f"{cls.__module__}.{cls.__name__}"


class StageWriter(MLWriter):
    """Writes a SparkNetEstimator or SparkNetModel."""

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

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
        with open(os.path.join(directory, _META), "w") as f:
            json.dump(meta, f, indent=1)


class StageReader(MLReader):
    """Reads a stage of class ``cls``; refuses metadata that names another class."""

    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        if metadata["class"] != class_name(self.cls):
            raise ValueError(f"{path} holds a {metadata['class']!r}, not a "
                             f"{class_name(self.cls)!r}")
        instance = self.cls()
        if hasattr(instance, "_weights"):
            directory = os.path.join(path, _MODEL_DIR)
            with open(os.path.join(directory, _META)) as f:
                meta = json.load(f)
            shapes = meta.pop("layers")
            with open(os.path.join(directory, _DEPLOY)) as f:
                meta["deploy_text"] = f.read()
            weights = read_caffemodel(os.path.join(directory, _WEIGHTS))
            found = {name: [list(b.shape) for b in blobs] for name, blobs in weights.items()}
            if found != shapes:
                raise ValueError(f"{directory}/{_WEIGHTS} does not match {_META}: "
                                 f"layers {sorted(found)} vs {sorted(shapes)}")
            instance._weights, instance._meta = weights, meta
        DefaultParamsReader.getAndSetParams(instance, metadata)
        instance._resetUid(metadata["uid"])
        return instance
