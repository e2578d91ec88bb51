"""SparkNetEstimator / SparkNetModel on a real local[2] session and real Fashion-MNIST."""
import os

import numpy as np
import pytest

pytest.importorskip("caffe")

from pyspark.ml import Pipeline, PipelineModel  # noqa: E402
from pyspark.ml.evaluation import MulticlassClassificationEvaluator  # noqa: E402
from pyspark.ml.feature import StandardScaler  # noqa: E402
from pyspark.ml.functions import array_to_vector, vector_to_array  # noqa: E402
from pyspark.ml.linalg import DenseVector  # noqa: E402
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder  # noqa: E402

from sparknet_ml import SparkNetEstimator, SparkNetModel, zoo  # noqa: E402
from sparknet_ml.data import fashion_mnist  # noqa: E402

STOCK_LENET = """
name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_test_lmdb" batch_size: 100 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 1
    weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 100 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
STOCK_SOLVER = """net: "examples/mnist/lenet_train_test.prototxt"
test_iter: 100 test_interval: 500 base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005
lr_policy: "inv" gamma: 0.0001 power: 0.75 display: 100 max_iter: 10000
snapshot: 5000 snapshot_prefix: "examples/mnist/lenet" solver_mode: CPU
"""


def fashion_df(spark, split, rows, scale=1 / 255.0, partitions=2):
    images, labels = fashion_mnist.load(split)
    import pandas as pd
    pdf = pd.DataFrame({"pixels": list(images[:rows].reshape(rows, -1).astype(np.float64) * scale),
                        "label": labels[:rows].astype(np.float64)})
    df = spark.createDataFrame(pdf).repartition(partitions)
    return df.withColumn("features", array_to_vector("pixels")).drop("pixels")


@pytest.fixture(scope="module")
def train_df(spark):
    return fashion_df(spark, "train", 4000).cache()


@pytest.fixture(scope="module")
def test_df(spark):
    return fashion_df(spark, "test", 1000).cache()


def lenet(**params):
    return SparkNetEstimator(netPrototxt=zoo.prototxt("lenet_train"),
                             solverPrototxt=zoo.prototxt("lenet_solver"), seed=7,
                             **{"syncInterval": 10, "maxIter": 8, **params})


@pytest.fixture(scope="module")
def model(train_df):
    return lenet().fit(train_df)


def accuracy(scored):
    return MulticlassClassificationEvaluator(metricName="accuracy").evaluate(scored)


def test_fit_and_transform_learn_fashion_mnist(model, test_df):
    scored = model.transform(test_df)
    assert scored.columns == ["label", "features", "rawPrediction", "probability", "prediction"]
    row = scored.first()
    assert isinstance(row.rawPrediction, DenseVector) and len(row.probability) == 10
    assert row.probability.toArray().sum() == pytest.approx(1.0, abs=1e-6)
    assert row.prediction == float(np.argmax(row.rawPrediction.toArray()))
    assert accuracy(scored) > 0.6  # chance is 0.1
    history = model.history
    assert list(history["round"]) == list(range(1, 9))
    assert history["samples"].iloc[0] == 2 * 10 * 64  # 2 workers x tau x batch
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert model.uid.startswith("SparkNetEstimator")


def test_fit_is_deterministic_and_does_not_mutate_the_estimator(train_df, model):
    est = lenet()
    before = {p.name: v for p, v in est.extractParamMap().items()}
    again = est.fit(train_df)
    assert {p.name: v for p, v in est.extractParamMap().items()} == before
    for name, blobs in model.weights.items():
        for mine, theirs in zip(blobs, again.weights[name]):
            np.testing.assert_array_equal(mine, theirs)


def test_model_save_load_gives_identical_predictions(model, test_df, tmp_path):
    path = str(tmp_path / "lenet")
    model.write().overwrite().save(path)
    loaded = SparkNetModel.load(path)
    assert loaded.uid == model.uid
    assert loaded.getSyncInterval() == 10 and loaded.getNetPrototxt() == model.getNetPrototxt()
    mine = model.transform(test_df).select(vector_to_array("rawPrediction")).collect()
    theirs = loaded.transform(test_df).select(vector_to_array("rawPrediction")).collect()
    assert mine == theirs
    with pytest.raises(ValueError, match="not a 'sparknet_ml.estimators.estimator"):
        SparkNetEstimator.load(path)


def test_save_caffe_model_loads_in_plain_pycaffe(model, test_df, tmp_path):
    import caffe
    model.saveCaffeModel(str(tmp_path))
    net = caffe.Net(str(tmp_path / "deploy.prototxt"), caffe.TEST,
                    weights=str(tmp_path / "weights.caffemodel"))
    rows = test_df.limit(64).collect()
    net.blobs["data"].data[...] = np.stack([r.features.toArray() for r in rows]).reshape(
        64, 1, 28, 28)
    logits = net.forward()["ip2"]
    spark_logits = [r.rawPrediction.toArray() for r in
                    model.transform(test_df.limit(64)).collect()]
    np.testing.assert_allclose(logits, np.stack(spark_logits), rtol=1e-5, atol=1e-5)


def test_save_caffe_model_replaces_only_its_own_files_and_only_when_asked(model, tmp_path):
    """Hardening round 2, item 1: saveCaffeModel silently overwrote an existing
    deploy.prototxt (no overwrite flag, unlike save and saveOnnx)."""
    from sparknet_ml.storage import StorageError
    folder = tmp_path / "caffe"
    folder.mkdir()  # an empty folder loses nothing
    model.saveCaffeModel(str(folder))
    (folder / "deploy.prototxt").write_text("the user's own edits")
    with pytest.raises(StorageError, match="caffe already exists; use overwrite=True"):
        model.saveCaffeModel(str(folder))
    assert (folder / "deploy.prototxt").read_text() == "the user's own edits"
    model.saveCaffeModel(str(folder), overwrite=True)
    assert (folder / "deploy.prototxt").read_text() == model._meta["deploy_text"]
    (folder / "notes.txt").write_text("not ours")  # a variant: a folder with more in it
    with pytest.raises(StorageError, match="exists and is not a folder of deploy.prototxt and "
                                           "weights.caffemodel; refusing to replace it"):
        model.saveCaffeModel(str(folder), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["caffe"]


def test_estimator_save_load_keeps_params(tmp_path):
    est = lenet(batchSize=32, outputBlobs=["ip1"])
    est.write().save(str(tmp_path / "est"))
    loaded = SparkNetEstimator.load(str(tmp_path / "est"))
    assert loaded.uid == est.uid
    assert (loaded.getBatchSize(), loaded.getOutputBlobs()) == (32, ["ip1"])
    assert loaded.getSolverPrototxt() == est.getSolverPrototxt()


def test_pipeline_with_scaler_survives_save_and_load(train_df, test_df, tmp_path):
    scaler = StandardScaler(inputCol="features", outputCol="scaled", withMean=False)
    pipeline = Pipeline(stages=[scaler, lenet(featuresCol="scaled", maxIter=4)])
    fitted = pipeline.fit(train_df)
    fitted.write().overwrite().save(str(tmp_path / "pipe"))
    loaded = PipelineModel.load(str(tmp_path / "pipe"))
    assert isinstance(loaded.stages[1], SparkNetModel)
    mine = fitted.transform(test_df).select("prediction").collect()
    assert mine == loaded.transform(test_df).select("prediction").collect()
    assert accuracy(fitted.transform(test_df)) > 0.4


def test_cross_validator_picks_a_model(train_df):
    est = lenet(maxIter=3)
    grid = (ParamGridBuilder().addGrid(est.syncInterval, [2, 10])
            .addGrid(est.baseLr, [0.01, 1e-6]).build())
    cv = CrossValidator(estimator=est, estimatorParamMaps=grid, numFolds=2, parallelism=2,
                        evaluator=MulticlassClassificationEvaluator(metricName="accuracy"),
                        seed=1)
    fitted = cv.fit(train_df.limit(1200))
    assert isinstance(fitted.bestModel, SparkNetModel)
    assert len(fitted.avgMetrics) == 4
    best = fitted.bestModel
    assert best.getBaseLr() == 0.01 and best.getSyncInterval() == 10  # most SGD steps win


def test_stock_caffe_prototxt_trains_unchanged(spark, test_df):
    raw = fashion_df(spark, "train", 3000, scale=1.0)  # 0..255: the net's transform scales
    model = SparkNetEstimator(netPrototxt=STOCK_LENET, solverPrototxt=STOCK_SOLVER,
                              inputShape=[1, 28, 28], syncInterval=10, maxIter=6,
                              seed=3).fit(raw)
    test_raw = fashion_df(spark, "test", 1000, scale=1.0)
    assert accuracy(model.transform(test_raw)) > 0.6


def test_output_blobs_extract_features(model, test_df):
    row = model.copy({model.outputBlobs: ["ip1", "pool2"]}).transform(test_df).first()
    assert len(row.ip1) == 500 and len(row.pool2) == 50 * 4 * 4
    with pytest.raises(ValueError, match="no blob 'nope'"):
        model.copy({model.outputBlobs: ["nope"]}).transform(test_df)


def test_bad_columns_fail_before_any_spark_job(spark, train_df):
    tracker = spark.sparkContext.statusTracker()
    jobs = len(tracker.getJobIdsForGroup())
    with pytest.raises(ValueError, match="column 'pixels' not found"):
        lenet(featuresCol="pixels").fit(train_df)
    with pytest.raises(ValueError, match="label column 'features' has type"):
        lenet(labelCol="features").fit(train_df)
    with pytest.raises(TypeError, match='param "syncInterval". must be a positive integer'):
        lenet(syncInterval=0)
    with pytest.raises(TypeError,
                       match='param "baseLr". must be a positive finite number, got nan'):
        lenet(baseLr=float("nan"))
    assert len(tracker.getJobIdsForGroup()) == jobs


@pytest.mark.parametrize("rounds_per_job", [1, 3])
def test_the_default_gives_the_one_job_per_round_model_bit_for_bit(train_df, model, caplog,
                                                                   rounds_per_job):
    """``model`` is fitted with the default, roundsPerJob='auto': barrier jobs on local[2]
    (rounds 1, then 2-8); 1 = a job per round averaged on the driver; 3 = rounds 1-3, 4-6,
    7-8."""
    import logging
    with caplog.at_level(logging.INFO, logger="sparknet_ml"):
        jobs = lenet(roundsPerJob=rounds_per_job).fit(train_df)
    assert "one Spark job per round" not in caplog.text
    for name, blobs in model.weights.items():
        for mine, theirs in zip(blobs, jobs.weights[name]):
            np.testing.assert_array_equal(mine, theirs)
    assert list(jobs.history["loss"]) == list(model.history["loss"])
    assert list(jobs.history["round"]) == list(range(1, 9))
    assert (jobs.history["compute_seconds"] > 0).all()


def test_the_default_takes_one_job_per_round_when_slots_are_short(train_df, caplog):
    import logging
    with caplog.at_level(logging.INFO, logger="sparknet_ml"):
        three = lenet(numWorkers=3, maxIter=2).fit(train_df)
    assert ("roundsPerJob='auto': one Spark job per round, averaged on the driver, because "
            "the cluster has 2 task slots for 3 workers") in caplog.text
    assert len(three.history) == 2 and np.isfinite(three.history["loss"]).all()


def test_barrier_jobs_checkpoint_and_resume_to_the_same_model(train_df, model, tmp_path,
                                                             caplog):
    import logging
    folder = str(tmp_path / "checkpoints")
    lenet(roundsPerJob=4, maxIter=5, checkpointDir=folder, checkpointInterval=3).fit(train_df)
    assert os.listdir(folder) == ["round-000005"]
    with caplog.at_level(logging.INFO, logger="sparknet_ml"):
        resumed = lenet(roundsPerJob=4, checkpointDir=folder, checkpointInterval=3).fit(train_df)
    assert "resuming from the checkpoint after round 5" in caplog.text
    for name, blobs in model.weights.items():
        for mine, theirs in zip(blobs, resumed.weights[name]):
            np.testing.assert_array_equal(mine, theirs)
    assert list(resumed.history["round"]) == list(range(1, 9))


def test_a_damaged_latest_checkpoint_resumes_from_the_previous_to_the_same_model(
        train_df, model, tmp_path, caplog):
    """Hardening round 2, item 8: a round folder whose checkpoint.json holds random bytes
    failed every later fit with a bare UnicodeDecodeError."""
    import logging
    import shutil
    folder = tmp_path / "checkpoints"
    lenet(maxIter=2, checkpointDir=str(folder), checkpointInterval=1).fit(train_df)
    shutil.copytree(folder / "round-000002", folder / "round-000003")
    damaged = folder / "round-000003" / "checkpoint.json"
    damaged.write_bytes(np.random.default_rng(0).bytes(64))
    with caplog.at_level(logging.INFO, logger="sparknet_ml"):
        resumed = lenet(checkpointDir=str(folder), checkpointInterval=4).fit(train_df)
    assert f"passing over a damaged checkpoint: {damaged} is damaged (not JSON" in caplog.text
    assert "resuming from the checkpoint after round 2" in caplog.text
    for name, blobs in model.weights.items():
        for mine, theirs in zip(blobs, resumed.weights[name]):
            np.testing.assert_array_equal(mine, theirs)
    assert os.listdir(folder) == ["round-000008"]


def test_a_barrier_job_needing_more_slots_than_the_cluster_has_fails_before_any_job(
        spark, train_df):
    tracker = spark.sparkContext.statusTracker()
    jobs = len(tracker.getJobIdsForGroup())
    with pytest.raises(ValueError, match="all 3 workers' tasks at once, but the cluster has 2"):
        lenet(roundsPerJob=2, numWorkers=3).fit(train_df)
    assert len(tracker.getJobIdsForGroup()) == jobs


@pytest.mark.parametrize("rounds_per_job", [1, 4])
def test_validation_column_is_held_out_and_scored_every_interval(spark, train_df,
                                                                 rounds_per_job):
    from pyspark.sql import functions as F
    df = train_df.withColumn("held_out", F.rand(seed=1) < 0.2)
    model = lenet(validationCol="held_out", validationInterval=3, maxIter=7,
                  roundsPerJob=rounds_per_job).fit(df)
    history = model.history
    scored = history.dropna(subset=["validation_accuracy"])
    assert list(scored["round"]) == [3, 6, 7]
    assert scored["validation_accuracy"].iloc[-1] > 0.5
    per_round = 2 * 10 * 64
    assert (history["samples"] == per_round).all()


def test_dsl_net_and_fine_tuning_from_a_caffemodel(train_df, test_df, model, tmp_path):
    from sparknet_ml.net import (ConvolutionLayer, InnerProductLayer, NetParam, Pooling,
                                 PoolingLayer, RDDLayer, ReLULayer, SoftmaxWithLoss)
    net = NetParam("LeNet",
                   RDDLayer("data", shape=[64, 1, 28, 28]), RDDLayer("label", shape=[64, 1]),
                   ConvolutionLayer("conv1", ["data"], kernel=(5, 5), numOutput=20),
                   PoolingLayer("pool1", ["conv1"], pooling=Pooling.Max, kernel=(2, 2),
                                stride=(2, 2)),
                   ConvolutionLayer("conv2", ["pool1"], kernel=(5, 5), numOutput=50),
                   PoolingLayer("pool2", ["conv2"], pooling=Pooling.Max, kernel=(2, 2),
                                stride=(2, 2)),
                   InnerProductLayer("ip1", ["pool2"], numOutput=500),
                   ReLULayer("relu1", ["ip1"]),
                   InnerProductLayer("ip2", ["relu1"], numOutput=10),
                   SoftmaxWithLoss("loss", ["ip2", "label"]))
    model.saveCaffeModel(str(tmp_path))
    est = SparkNetEstimator(netPrototxt=net, solverPrototxt=zoo.prototxt("lenet_solver"),
                            initialWeights=str(tmp_path / "weights.caffemodel"),
                            syncInterval=1, maxIter=1, seed=7)
    assert est.getInputShape() is None  # inferred from the RDDLayer
    tuned = est.fit(train_df)
    before, after = accuracy(model.transform(test_df)), accuracy(tuned.transform(test_df))
    assert after > before - 0.05  # one more round from the trained weights, not from scratch
    assert after > 0.6


def test_v1_files_train_and_fine_tune_from_a_v1_caffemodel(spark, test_df, tmp_path):
    """BVLC's 2014 LeNet (V1 layers, scale in data_param), a solver with the solver_type enum,
    and a caffemodel in V1 form: all upgraded by Caffe's own rules, with warnings."""
    from sparknet_ml.net import UpgradedFormatWarning
    from sparknet_ml.persistence.caffemodel import read_caffemodel
    from tests.caffe.test_upgrade import v1_caffemodel, zoo_file
    raw = fashion_df(spark, "train", 3000, scale=1.0)  # 0..255: the upgraded transform scales
    test_raw = fashion_df(spark, "test", 1000, scale=1.0)
    with pytest.warns(UpgradedFormatWarning):
        est = SparkNetEstimator(netPrototxt=zoo_file("lenet_train_test_v1"),
                                solverPrototxt=zoo_file("nesterov_solver_v1"),
                                inputShape=[1, 28, 28], syncInterval=10, maxIter=6, seed=3)
        model = est.fit(raw)
    assert accuracy(model.transform(test_raw)) > 0.6
    model.saveCaffeModel(str(tmp_path / "v2"))
    with open(zoo_file("lenet_train_test_v1")) as f:
        v1_text = f.read()
    v1_caffemodel(tmp_path / "v1.caffemodel", v1_text,
                  read_caffemodel(str(tmp_path / "v2" / "weights.caffemodel")))
    with pytest.warns(UpgradedFormatWarning):
        tuned = est.copy({est.initialWeights: str(tmp_path / "v1.caffemodel"),
                          est.maxIter: 1}).fit(raw)
    assert accuracy(tuned.transform(test_raw)) > 0.6  # one round on, not from scratch


def test_image_folder_trains_and_scores(spark, tmp_path):
    """Spark's image data source (struct column, BGR bytes) straight into a conv net."""
    from pyspark.sql import functions as F
    from tests.spark.test_data_arrow_spark import _write_png
    images, labels = fashion_mnist.load("test")
    for i in range(60):
        gray = np.pad(images[i], 2)  # 32x32
        _write_png(tmp_path / f"{labels[i]}_{i}.png", np.repeat(gray[:, :, None], 3, axis=2))
    df = (spark.read.format("image").load(str(tmp_path))
          .withColumn("label", F.regexp_extract("image.origin", r"/(\d)_\d+\.png$", 1)
                      .cast("double")))
    est = SparkNetEstimator(netPrototxt=zoo.prototxt("cifar10_quick_train"),
                            solverPrototxt=zoo.prototxt("cifar10_quick_solver"),
                            featuresCol="image", batchSize=16, syncInterval=5, maxIter=2,
                            numWorkers=3, seed=1)
    model = est.fit(df)
    assert est.getInputShape() is None and model.getInputShape() is None  # [3, 32, 32] inferred
    assert list(model.history["samples"]) == [3 * 5 * 16] * 2  # repartitioned to 3 workers
    scored = model.transform(df)
    assert scored.count() == 60 and "image" in scored.columns
    assert scored.filter(F.col("prediction").isNull()).count() == 0


def _cuda_build():
    from sparknet_ml.engine.devices import caffe_has_cuda
    return caffe_has_cuda()


@pytest.mark.skipif(_cuda_build(), reason="pycaffe here is a CUDA build")
def test_use_gpu_true_on_a_cpu_build_fails_clearly(train_df):
    with pytest.raises(ValueError, match="useGpu='true' but pycaffe is a CPU-only build"):
        lenet(useGpu="true").fit(train_df)
    with pytest.raises(TypeError, match='param "useGpu". must be'):
        lenet(useGpu="sometimes")


def test_net_and_solver_params_take_text_paths_and_messages(tmp_path):
    from sparknet_ml.net import parse_net, parse_solver
    (tmp_path / "net.prototxt").write_text(zoo.prototxt("lenet_train"))
    (tmp_path / "solver.prototxt").write_text(zoo.prototxt("lenet_solver"))
    est = SparkNetEstimator(netPrototxt=str(tmp_path / "net.prototxt"),
                            solverPrototxt=tmp_path / "solver.prototxt")
    assert est.getNetPrototxt() == zoo.prototxt("lenet_train")
    assert parse_solver(est.getSolverPrototxt()).base_lr == pytest.approx(0.01)
    est.setNetPrototxt(parse_net(zoo.prototxt("lenet_train")))
    assert parse_net(est.getNetPrototxt()) == parse_net(zoo.prototxt("lenet_train"))


def test_tf32_is_an_opt_in_param_of_estimator_and_model():
    for cls in (SparkNetEstimator, SparkNetModel):
        assert cls().getAllowTf32() is False
    assert SparkNetEstimator(allowTf32=True).getAllowTf32() is True
    assert SparkNetModel().setAllowTf32(True).getAllowTf32() is True
