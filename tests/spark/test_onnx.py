"""A trained SparkNetModel leaves as ONNX: ``saveOnnx`` and ``sparknet-ml export``, plain
onnxruntime on the file, and ``scoringBackend='onnxruntime'`` inside ``transform`` (real
local[2] session, real Fashion-MNIST), also where the Python workers cannot import pycaffe."""
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("caffe")
ort = pytest.importorskip("onnxruntime")

from pyspark.ml.functions import vector_to_array  # noqa: E402

from sparknet_ml import SparkNetEstimator, cli  # noqa: E402
from sparknet_ml.data import fashion_mnist  # noqa: E402
from sparknet_ml.net import NetSpecError  # noqa: E402
from sparknet_ml.storage import StorageError  # noqa: E402

from .test_bad_input import SOLVER  # noqa: E402
from .test_estimator import STOCK_LENET, STOCK_SOLVER, fashion_df  # noqa: E402

# Caffe's LeNet with a TEST-phase center crop, mean value and scale: the exported model
# carries them as nodes and takes the stored 28x28 examples.
CROPPED_LENET = STOCK_LENET.replace("transform_param { scale: 0.00390625 }",
                                    "transform_param { crop_size: 24 mean_value: 0.25 "
                                    "scale: 2.0 }")
JOB = os.path.join(os.path.dirname(os.path.dirname(__file__)), "cluster", "no_caffe_job.py")


def close(got, want):
    """The issue's bound: max |diff| <= 1e-4 x max(1, max |want|)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    diff = float(np.abs(got - want).max())
    assert diff <= 1e-4 * max(1.0, float(np.abs(want).max())), diff


@pytest.fixture(scope="module")
def test_df(spark):
    return fashion_df(spark, "test", 500).cache()


@pytest.fixture(scope="module")
def model(spark):
    train = fashion_df(spark, "train", 1200)
    return SparkNetEstimator(netPrototxt=CROPPED_LENET, solverPrototxt=STOCK_SOLVER,
                             inputShape=[1, 28, 28], syncInterval=5, maxIter=3, seed=3,
                             showProgress=False).fit(train)


def scored(model, df, *columns):
    out = model.transform(df).select(*(vector_to_array(c).alias(c) if c != "prediction"
                                       else c for c in columns)).toPandas()
    return [np.stack(out[c]) if c != "prediction" else out[c].to_numpy() for c in columns]


def test_onnxruntime_backend_scores_as_caffe_does(model, test_df):
    raw, prob, pred = scored(model, test_df, "rawPrediction", "probability", "prediction")
    onnx_model = model.copy().setScoringBackend("onnxruntime")
    o_raw, o_prob, o_pred = scored(onnx_model, test_df, "rawPrediction", "probability",
                                   "prediction")
    close(o_raw, raw)
    close(o_prob, prob)
    top2 = np.sort(raw, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3  # rows whose class no rounding can flip
    assert clear.sum() > 450
    assert np.array_equal(o_pred[clear], pred[clear])


def test_onnxruntime_backend_takes_uint8_pixels_as_caffe_does(spark, model):
    """A binary column of uint8 pixels: the scoring model takes them as uint8 (a Cast in the
    graph); float32 rows of pixel values in such a column pass through the same model."""
    from pyspark.errors import PythonException
    images, _ = fashion_mnist.load("test")
    pixels = images[:300].reshape(300, -1)
    onnx_model = model.copy().setScoringBackend("onnxruntime")
    for rows in (pixels, pixels.astype(np.float32)):
        df = spark.createDataFrame([(bytearray(r.tobytes()),) for r in rows], "features binary")
        (raw,) = scored(model, df, "rawPrediction")
        (o_raw,) = scored(onnx_model, df, "rawPrediction")
        close(o_raw, raw)
    fractions = spark.createDataFrame([(bytearray((r / 255).astype(np.float32).tobytes()),)
                                       for r in pixels[:8]], "features binary")
    with pytest.raises(PythonException, match="exported for uint8 pixels"):
        scored(onnx_model, fractions, "rawPrediction")


def test_onnxruntime_backend_adds_output_blobs(model, test_df):
    caffe_cols = model.copy().setOutputBlobs(["ip1", "pool1"])
    onnx_cols = caffe_cols.copy().setScoringBackend("onnxruntime")
    a = caffe_cols.transform(test_df).select("ip1", "pool1").toPandas()
    b = onnx_cols.transform(test_df).select("ip1", "pool1").toPandas()
    for column in ("ip1", "pool1"):
        close(np.stack(b[column]), np.stack(a[column]))
    assert len(b["pool1"][0]) == 20 * 10 * 10


def test_saved_onnx_runs_in_plain_onnxruntime(model, test_df, tmp_path):
    path = str(tmp_path / "lenet.onnx")
    model.saveOnnx(path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "data" and graph_input.shape == ["N", 1, 28, 28]
    assert [o.name for o in session.get_outputs()] == ["ip2"]
    pixels = test_df.select(vector_to_array("features").alias("f")).toPandas()
    x = np.stack(pixels["f"]).reshape(-1, 1, 28, 28).astype(np.float32)
    (raw,) = scored(model, test_df, "rawPrediction")
    close(session.run(None, {"data": x})[0], raw)
    close(session.run(None, {"data": x[:7]})[0], raw[:7])  # any batch size


def test_save_onnx_without_the_transform_takes_the_nets_input(model, test_df, tmp_path):
    path = str(tmp_path / "bare.onnx")
    model.saveOnnx(path, includeTransform=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["N", 1, 24, 24]
    pixels = test_df.select(vector_to_array("features").alias("f")).toPandas()
    stored = np.stack(pixels["f"]).reshape(-1, 1, 28, 28).astype(np.float32)
    (raw,) = scored(model, test_df, "rawPrediction")
    close(session.run(None, {"data": model.inputTransform.apply(stored)})[0], raw)


def test_save_onnx_refuses_an_existing_file_and_replaces_it_when_asked(model, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(StorageError, match=r"m\.onnx already exists; use overwrite=True"):
        model.saveOnnx(str(path))
    assert path.read_bytes() == b"not a model"
    model.saveOnnx(str(path), overwrite=True)
    assert ort.InferenceSession(str(path)).get_outputs()[0].name == "ip2"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # nothing staged is left behind


def test_a_setting_onnx_cannot_express_fails_before_anything_is_written(spark, tmp_path):
    batch_stats = """name: "batch_stats"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 8 dim: 1 dim: 4 dim: 4 } shape { dim: 8 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "bn" type: "BatchNorm" bottom: "ip" top: "ip"
  batch_norm_param { use_global_stats: false } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
    rng = np.random.default_rng(0)
    df = spark.createDataFrame([(rng.random(16).tolist(), float(i % 3)) for i in range(32)],
                               "features array<double>, label double")
    model = SparkNetEstimator(netPrototxt=batch_stats, solverPrototxt=SOLVER, batchSize=8,
                              syncInterval=2, maxIter=1, numWorkers=1,
                              showProgress=False).fit(df)
    path = tmp_path / "batch_stats.onnx"
    with pytest.raises(NetSpecError, match="layer 'bn': BatchNorm with use_global_stats: false"):
        model.saveOnnx(str(path))
    assert os.listdir(tmp_path) == []
    with pytest.raises(NetSpecError, match="use_global_stats"):
        model.copy().setScoringBackend("onnxruntime").transform(df)


def test_cli_exports_a_saved_model_and_a_net_with_its_caffemodel(model, test_df, tmp_path):
    folder, caffe_files = str(tmp_path / "model"), str(tmp_path / "caffe")
    model.save(folder)
    model.saveCaffeModel(caffe_files)
    from_model, from_net = str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")
    assert cli.main(["export", "--onnx", "--model", folder, "--out", from_model,
                     "--output-blobs", "ip1"]) == 0
    assert cli.main(["export", "--onnx", "--net", os.path.join(caffe_files, "deploy.prototxt"),
                     "--weights", os.path.join(caffe_files, "weights.caffemodel"),
                     "--out", from_net]) == 0
    pixels = test_df.limit(32).select(vector_to_array("features").alias("f")).toPandas()
    stored = np.stack(pixels["f"]).reshape(-1, 1, 28, 28).astype(np.float32)
    a = ort.InferenceSession(from_model)
    b = ort.InferenceSession(from_net)
    assert [o.name for o in a.get_outputs()] == ["ip2", "ip1"]
    assert [o.name for o in b.get_outputs()] == ["ip2"]
    close(b.run(None, {"data": model.inputTransform.apply(stored)})[0],
          a.run(["ip2"], {"data": stored})[0])


@pytest.mark.parametrize("args, message", [
    (["--net", "deploy.prototxt"], "--net needs --weights"),
    (["--model", "nowhere"], "not a saved model"),
    (["--net", "deploy.prototxt", "--weights", "w.caffemodel", "--no-transform"],
     "--no-transform applies to --model only (a --net export has no data transform"),
    (["--model", "m", "--weights", "w.caffemodel"], "--weights applies to --net only"),
    (["--model", "m", "--input-shape", "1,4,4"], "--input-shape applies to --net only"),
])
def test_cli_export_errors_are_one_line(args, message, tmp_path, capsys):
    assert cli.main(["export", "--onnx", *args, "--out", str(tmp_path / "x.onnx")]) == 2
    assert message in capsys.readouterr().err


def test_scoring_with_onnxruntime_where_workers_have_no_pycaffe(model, test_df, tmp_path):
    """Python workers forked from a daemon that refuses ``import caffe``: the onnxruntime
    backend scores there, the Caffe backend cannot."""
    from pyspark.sql import functions as F
    folder, data, out = (str(tmp_path / n) for n in ("model", "data", "scored"))
    model.save(folder)
    test_df.limit(64).withColumn("id", F.monotonically_increasing_id()).write.parquet(data)
    done = subprocess.run([sys.executable, JOB, folder, data, out], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "caffe backend failed: No module named 'caffe'" in done.stdout, done.stdout
    import pandas as pd
    got = pd.read_parquet(out).sort_values("id")
    want = model.transform(test_df.sparkSession.read.parquet(data)).select(
        "id", vector_to_array("rawPrediction").alias("raw")).toPandas().sort_values("id")
    assert list(got["id"]) == list(want["id"])
    close(np.stack(got["raw"]), np.stack(want["raw"]))
