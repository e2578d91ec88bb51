"""Models, checkpoints and inputs on a real non-local file system, from a classic session
(Hadoop's SFTPFileSystem) and from a Spark Connect client (fsspec's sftp, paramiko): the same
checks for both (tests/spark/test_storage.py, tests/connect/test_connect_storage.py), on the
tests' sshd on 127.0.0.1 (fixture ``sftp``).

Each check takes ``s``: the session (``s.spark``), the server seen from the session kind's own
folder (``s.sftp``, an :class:`Under`), a DataFrame ``s.df`` and a model fitted on it
``s.model``, pytest's ``s.monkeypatch`` and whether the session is a Connect client
(``s.connect``)."""
import os

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.functions import array_to_vector
from pyspark.ml.tuning import CrossValidator, CrossValidatorModel, ParamGridBuilder

from sparknet_ml import SparkNetEstimator, SparkNetModel, storage
from sparknet_ml.persistence import caffemodel
from sparknet_ml.persistence.caffemodel import mean_blob_bytes

from .spark.test_bad_input import SOLVER, tiny

MEAN_NET = """name: "mean"
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { mean_file: "stock/path/mean.binaryproto" scale: 0.5 }
  data_param { source: "unused" batch_size: 8 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


class Under:
    """The tests' SFTP server seen from one folder of it (each session kind writes its own)."""

    def __init__(self, sftp, folder: str):
        self.sftp, self.folder = sftp, folder
        os.makedirs(sftp.local(folder), exist_ok=True)

    def url(self, *names: str) -> str:
        return self.sftp.url(self.folder, *names)

    def local(self, *names: str) -> str:
        return self.sftp.local(self.folder, *names)


def rows(spark):
    """The checks' DataFrame: 64 rows of 16 features, 3 classes, 2 partitions."""
    rng = np.random.default_rng(0)
    data = [(rng.random(16).tolist(), float(i % 3)) for i in range(64)]
    return spark.createDataFrame(data, "features array<double>, label double").repartition(2)


def outputs(model, df):
    """Every output column of ``model.transform(df)``, as numpy arrays."""
    rows = model.transform(df).select("rawPrediction", "probability", "prediction").collect()
    return [np.array([r[i].toArray() if i < 2 else r[i] for r in rows]) for i in range(3)]


def assert_same_outputs(a, b, df):
    for mine, theirs in zip(outputs(a, df), outputs(b, df)):
        np.testing.assert_array_equal(mine, theirs)


def hidden_leftovers(folder):
    return [n for n in os.listdir(folder) if ".staged-" in n or ".replaced-" in n]


def check_pysparks_own_model_saves_and_loads_there(s):
    sftp, df = s.sftp, s.df
    data = df.select(array_to_vector("features").alias("features"), "label")
    lr = LogisticRegression(maxIter=3).fit(data)
    lr.write().save(sftp.url("lr"))
    loaded = LogisticRegressionModel.load(sftp.url("lr"))
    np.testing.assert_array_equal(loaded.coefficientMatrix.toArray(),
                                  lr.coefficientMatrix.toArray())


def check_model_and_estimator_save_and_load_bit_identical(s):
    sftp, df, model = s.sftp, s.df, s.model
    model.write().save(sftp.url("model"))
    assert sorted(os.listdir(sftp.local("model", "model"))) == [
        "deploy.prototxt", "model.json", "weights.caffemodel"]
    loaded = SparkNetModel.load(sftp.url("model"))
    assert loaded.uid == model.uid
    assert_same_outputs(loaded, model, df)
    estimator = tiny(maxIter=3)
    estimator.write().save(sftp.url("estimator"))
    back = SparkNetEstimator.load(sftp.url("estimator"))
    assert back.uid == estimator.uid
    assert {p.name: v for p, v in back.extractParamMap().items()} == {
        p.name: v for p, v in estimator.extractParamMap().items()}
    assert hidden_leftovers(sftp.local()) == []


def check_save_refuses_an_existing_path_and_overwrite_replaces_it(s):
    sftp, df, model = s.sftp, s.df, s.model
    path = sftp.url("replaced")
    model.write().save(path)
    with pytest.raises(storage.StorageError, match=r"replaced already exists; use "
                                                   r"write\(\)\.overwrite\(\)"):
        model.write().save(path)
    other = tiny(seed=7).fit(df)
    other.write().overwrite().save(path)
    loaded = SparkNetModel.load(path)
    assert loaded.uid == other.uid
    np.testing.assert_array_equal(loaded.weights["ip"][0], other.weights["ip"][0])
    assert hidden_leftovers(sftp.local()) == []


def check_onnx_export_saves_there_and_refuses_an_existing_file(s):
    spark, sftp, model = s.spark, s.sftp, s.model
    ort = pytest.importorskip("onnxruntime")
    path = sftp.url("tiny.onnx")
    model.saveOnnx(path)
    with pytest.raises(storage.StorageError, match="tiny.onnx already exists; use overwrite"):
        model.saveOnnx(path)
    model.saveOnnx(path, overwrite=True)
    session = ort.InferenceSession(storage.read_bytes(path, 2 ** 20, "test"))
    x = np.random.default_rng(1).random((5, 1, 4, 4), np.float32)
    inputs = spark.createDataFrame([(r.reshape(-1).tolist(),) for r in x.astype(float)],
                                   "features array<double>")
    raw = np.array([r[0].toArray() for r in model.transform(inputs).select("rawPrediction")
                    .collect()])
    np.testing.assert_allclose(session.run(None, {"data": x})[0], raw, rtol=1e-5, atol=1e-5)
    assert hidden_leftovers(sftp.local()) == []


def check_a_save_that_fails_midway_leaves_the_previous_model(s):
    sftp, df, model, monkeypatch = s.sftp, s.df, s.model, s.monkeypatch
    path = sftp.url("kept")
    model.write().save(path)
    other = tiny(seed=3).fit(df)

    def fail(*args):
        raise OSError("disk full (injected)")
    monkeypatch.setattr("sparknet_ml.persistence.caffemodel_bytes", fail)
    with pytest.raises(OSError, match="injected"):
        other.write().overwrite().save(path)
    monkeypatch.undo()
    assert SparkNetModel.load(path).uid == model.uid
    assert hidden_leftovers(sftp.local()) == []


def check_pipeline_and_cross_validator_models_save_and_load_there(s):
    sftp, df = s.sftp, s.df
    pipeline = Pipeline(stages=[tiny()]).fit(df)
    pipeline.write().save(sftp.url("pipeline"))
    loaded = PipelineModel.load(sftp.url("pipeline"))
    assert_same_outputs(loaded.stages[0], pipeline.stages[0], df)
    estimator = tiny()
    cv = CrossValidator(estimator=estimator, numFolds=2, seed=3,
                        estimatorParamMaps=ParamGridBuilder().addGrid(
                            estimator.syncInterval, [1, 2]).build(),
                        evaluator=MulticlassClassificationEvaluator()).fit(df)
    cv.write().save(sftp.url("cv"))
    back = CrossValidatorModel.load(sftp.url("cv"))
    assert back.avgMetrics == cv.avgMetrics
    assert_same_outputs(back.bestModel, cv.bestModel, df)


def check_inputs_are_read_from_there(s):
    """initialWeights, meanFile and prototxt params given as sftp:// URIs; the same fit from
    local copies of the same files gives the same weights."""
    sftp, df, model = s.sftp, s.df, s.model
    model.saveCaffeModel(sftp.url("caffe"))
    assert sorted(os.listdir(sftp.local("caffe"))) == ["deploy.prototxt", "weights.caffemodel"]
    mean = np.random.default_rng(1).random((1, 4, 4)).astype(np.float32)
    storage.write_bytes(sftp.url("inputs", "mean.binaryproto"), mean_blob_bytes(mean))
    storage.write_bytes(sftp.url("inputs", "net.prototxt"), MEAN_NET.encode())
    storage.write_bytes(sftp.url("inputs", "solver.prototxt"), SOLVER.encode())
    remote = SparkNetEstimator(
        netPrototxt=sftp.url("inputs", "net.prototxt"),
        solverPrototxt=sftp.url("inputs", "solver.prototxt"), inputShape=[1, 4, 4],
        meanFile=sftp.url("inputs", "mean.binaryproto"),
        initialWeights=sftp.url("caffe", "weights.caffemodel"), batchSize=8, syncInterval=2,
        maxIter=1, seed=1)
    assert remote.getNetPrototxt() == MEAN_NET
    local = remote.copy({remote.netPrototxt: MEAN_NET, remote.solverPrototxt: SOLVER,
                         remote.meanFile: sftp.local("inputs", "mean.binaryproto"),
                         remote.initialWeights: sftp.local("caffe", "weights.caffemodel")})
    a, b = remote.fit(df), local.fit(df)
    np.testing.assert_array_equal(a.weights["ip"][0], b.weights["ip"][0])
    np.testing.assert_array_equal(a._mean_image, mean)


BAD_LOCATIONS = {
    "missing model": (lambda s: SparkNetModel.load(s.sftp.url("nowhere")),
                      r"cannot load sftp://.*/nowhere: no such folder"),
    "unknown scheme": (lambda s: SparkNetModel.load("foo://host/model"),
                       "foo://host/model: no Hadoop FileSystem for scheme 'foo' in this "
                       r"SparkSession; it needs spark.hadoop.fs.foo.impl",
                       r"foo://host/model: a Spark Connect client reaches foo:// through "
                       r"fsspec .* Protocol not known: foo"),
    "store without its connector": (
        lambda s: s.model.write().save("s3a://bucket/model"),
        "no Hadoop FileSystem for scheme 's3a' .* hadoop-aws",
        r"s3a://bucket/model: a Spark Connect client reaches s3a:// through fsspec .*s3fs"),
    "missing input": (
        lambda s: tiny(initialWeights=s.sftp.url("missing.caffemodel")).fit(s.df),
        r"cannot read sftp://.*/missing.caffemodel: no such file or folder"),
}


def check_bad_locations_are_one_clear_line(s):
    for name, (action, classic, *connect) in BAD_LOCATIONS.items():
        with pytest.raises(ValueError, match=(connect or [classic])[0] if s.connect
                           else classic) as caught:
            action(s)
        assert "\n" not in str(caught.value), name


def check_a_truncated_caffemodel_on_the_server_is_named(s):
    sftp, model = s.sftp, s.model
    model.write().save(sftp.url("truncated"))
    weights = sftp.local("truncated", "model", "weights.caffemodel")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(ValueError, match=r"sftp://.*/truncated/model/weights.caffemodel: not a "
                                         r"caffemodel \(truncated or corrupt\)"):
        SparkNetModel.load(sftp.url("truncated"))


def check_a_size_cap_is_checked_on_the_server_before_reading(s):
    sftp, model, monkeypatch = s.sftp, s.model, s.monkeypatch
    model.write().save(sftp.url("capped"))
    backend = storage._Fsspec if s.connect else storage._Hadoop
    read = backend.read

    def read_no_caffemodel(self, path):
        assert not path.endswith(".caffemodel"), "read the caffemodel"
        return read(self, path)
    monkeypatch.setattr(backend, "read", read_no_caffemodel)
    monkeypatch.setattr(caffemodel, "MAX_CAFFEMODEL_BYTES", 100)
    with pytest.raises(ValueError, match=r"weights.caffemodel: \d+ bytes, over the 100 bytes "
                                         r"cap \(MAX_CAFFEMODEL_BYTES\)"):
        SparkNetModel.load(sftp.url("capped"))


CHECKS = [check_pysparks_own_model_saves_and_loads_there, check_model_and_estimator_save_and_load_bit_identical, check_save_refuses_an_existing_path_and_overwrite_replaces_it, check_onnx_export_saves_there_and_refuses_an_existing_file, check_a_save_that_fails_midway_leaves_the_previous_model, check_pipeline_and_cross_validator_models_save_and_load_there, check_inputs_are_read_from_there, check_bad_locations_are_one_clear_line, check_a_truncated_caffemodel_on_the_server_is_named, check_a_size_cap_is_checked_on_the_server_before_reading]
"""Every check, for each session kind's parametrized test."""
