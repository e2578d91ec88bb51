"""The public API through a Spark Connect session gives what a classic session gives, bit for
bit: fit, transform (by Caffe and by onnxruntime), evaluation, save/load, Pipeline,
CrossValidator (parallelism 2), TrainValidationSplit, validation, checkpoints and resume,
barrier jobs, and the same errors for bad input; the progress bar and MLflow work there.

The classic baselines are computed before the module's Connect session opens (pyspark switches
a process to its Connect paths while a Connect session is open)."""
import numpy as np
import pytest

pytest.importorskip("caffe")
pytest.importorskip("grpc")

from sparknet_ml import SparkNetEstimator, SparkNetModel, zoo  # noqa: E402

ROWS = 600


def fashion(spark):
    """Fashion-MNIST's first training rows (features array<double>, label, a held-out flag)
    in 2 partitions."""
    from sparknet_ml.data.fashion_mnist import load
    x, y = load("train")
    rows = [(image.reshape(-1).astype(float).tolist(), float(label), i % 5 == 0)
            for i, (image, label) in enumerate(zip(x[:ROWS], y[:ROWS]))]
    return spark.createDataFrame(
        rows, "features array<double>, label double, held_out boolean").repartition(2)


def lenet(**params):
    return SparkNetEstimator(**{
        "netPrototxt": zoo.prototxt("lenet_train_test"),
        "solverPrototxt": zoo.prototxt("lenet_solver"), "inputShape": [1, 28, 28],
        "batchSize": 16, "syncInterval": 3, "maxIter": 3, "seed": 7, "numWorkers": 2,
        "showProgress": False, **params})


def outputs(model, df):
    """rawPrediction, prediction and label of every row, in the rows' order."""
    scored = model.transform(df).toPandas()
    return (np.stack(scored["rawPrediction"].map(lambda v: v.toArray())),
            scored["prediction"].to_numpy(), scored["label"].to_numpy())


def cross_validator(parallelism):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
    est = lenet()
    grid = ParamGridBuilder().addGrid(est.baseLr, [0.01, 0.002]).build()
    return CrossValidator(estimator=est, estimatorParamMaps=grid, numFolds=2, seed=3,
                          evaluator=MulticlassClassificationEvaluator(metricName="accuracy"),
                          parallelism=parallelism)


def train_validation_split():
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import ParamGridBuilder, TrainValidationSplit
    est = lenet()
    grid = ParamGridBuilder().addGrid(est.syncInterval, [2, 3]).build()
    return TrainValidationSplit(estimator=est, estimatorParamMaps=grid, trainRatio=0.75, seed=5,
                                evaluator=MulticlassClassificationEvaluator(
                                    metricName="accuracy"))


@pytest.fixture(scope="module")
def classic(spark):
    """What the classic session gives (computed before the Connect session opens)."""
    df = fashion(spark)
    model = lenet().fit(df)
    validated = lenet(validationCol="held_out", validationInterval=2).fit(df)
    return {"model": model, "outputs": outputs(model, df),
            "onnx_outputs": outputs(model.copy().setScoringBackend("onnxruntime"), df),
            "validation": [h["validation_accuracy"] for h in validated.history.to_dict("records")],
            "cv": cross_validator(1).fit(df).avgMetrics,
            "tvs": train_validation_split().fit(df).validationMetrics}


@pytest.fixture(scope="module")
def df(classic, remote):
    return fashion(remote)


@pytest.fixture(scope="module")
def model(df):
    return lenet().fit(df)


def same_weights(a, b):
    assert a.weights.keys() == b.weights.keys()
    for name in a.weights:
        for x, y in zip(a.weights[name], b.weights[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_fit_transform_and_evaluate_give_the_classic_results(classic, df, model):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    same_weights(model, classic["model"])
    assert len(model.history) == 3
    raw, prediction, labels = outputs(model, df)
    np.testing.assert_array_equal(raw, classic["outputs"][0])
    np.testing.assert_array_equal(prediction, classic["outputs"][1])
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
        model.transform(df))
    assert accuracy == pytest.approx(np.mean(prediction == labels))


def test_barrier_jobs_give_the_same_model(df, model):
    same_weights(lenet(roundsPerJob=3).fit(df), model)


def test_validation_gives_the_classic_accuracies(classic, df):
    validated = lenet(validationCol="held_out", validationInterval=2).fit(df)
    assert [h["validation_accuracy"] for h in validated.history.to_dict("records")] == \
        pytest.approx(classic["validation"], nan_ok=True)


def test_checkpoints_resume_to_the_same_model(df, model, tmp_path, caplog):
    import logging
    folder = str(tmp_path / "checkpoints")
    lenet(maxIter=2, checkpointDir=folder, checkpointInterval=1).fit(df)
    with caplog.at_level(logging.INFO, logger="sparknet_ml"):
        resumed = lenet(checkpointDir=folder, checkpointInterval=1, roundsPerJob=2).fit(df)
    assert "resuming from the checkpoint after round 2" in caplog.text
    same_weights(resumed, model)


def test_model_and_estimator_save_and_load(df, model, tmp_path):
    path = str(tmp_path / "model")
    model.write().save(path)
    loaded = SparkNetModel.load(path)
    same_weights(loaded, model)
    np.testing.assert_array_equal(outputs(loaded, df)[0], outputs(model, df)[0])
    with pytest.raises(OSError, match="already exists"):
        model.write().save(path)
    model.write().overwrite().save(path)
    est = lenet(baseLr=0.003)
    est.write().save(str(tmp_path / "estimator"))
    assert SparkNetEstimator.load(str(tmp_path / "estimator")).getBaseLr() == 0.003


def test_pipeline_saves_and_loads(df, model, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    fitted = Pipeline(stages=[lenet()]).fit(df)
    fitted.write().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    np.testing.assert_array_equal(outputs(loaded, df)[0], outputs(model, df)[0])


def test_cross_validator_with_parallelism_2_gives_the_classic_metrics(classic, df):
    assert cross_validator(2).fit(df).avgMetrics == classic["cv"]


def test_train_validation_split_gives_the_classic_metrics(classic, df):
    assert train_validation_split().fit(df).validationMetrics == classic["tvs"]


def test_fit_shows_progress_on_a_terminal(df, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    lenet(showProgress=True).fit(df)
    final = stream.getvalue().split("\r")[-1]
    assert "SparkNet" in final and "3/3" in final


def test_an_active_mlflow_run_gets_a_child_run_per_fit(df, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow-skinny has no SQL store
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    with mlflow.start_run() as parent:
        model = lenet().fit(df)
    client = mlflow.MlflowClient()
    [child] = client.search_runs([parent.info.experiment_id],
                                 f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert child.info.status == "FINISHED" and child.data.params["maxIter"] == "3"
    losses = client.get_metric_history(child.info.run_id, "loss")
    assert [m.value for m in losses] == pytest.approx(list(model.history["loss"]))


@pytest.mark.parametrize("params, match", [
    ({"featuresCol": "nope"}, "column 'nope' not found; the DataFrame has: features"),
    ({"labelCol": "held_out"}, "label column 'held_out'"),
    ({"maxIter": 0}, "maxIter must be a positive integer"),
])
def test_bad_input_fails_with_the_classic_message(df, params, match):
    with pytest.raises(ValueError, match=match):
        lenet(**params).fit(df)


def test_weights_over_the_plan_share_are_shipped_as_a_file(df, model, monkeypatch):
    # the test lowers the share so LeNet's weights take the file route
    from sparknet_ml.driver import exchange
    from sparknet_ml.engine.caches import clear_caches
    from sparknet_ml.engine.scoring import weights_key
    from sparknet_ml.tasks.states import Shipped
    inline = outputs(model, df)[0]
    monkeypatch.setattr(exchange, "PLAN_SHARE", 1e-6)
    assert isinstance(exchange.share_weights(df.sparkSession, model.weights,
                                            weights_key(model.weights)), Shipped)
    np.testing.assert_array_equal(outputs(model, df)[0], inline)
    np.testing.assert_array_equal(outputs(model, df)[0], inline)  # shipped once, used again
    clear_caches()  # the record of shipped files forgotten: the same file is shipped again
    shipped = exchange.share_weights(df.sparkSession, model.weights, weights_key(model.weights))
    assert isinstance(shipped, Shipped)
    np.testing.assert_array_equal(outputs(model, df)[0], inline)


def test_onnxruntime_scoring_gives_the_classic_outputs_inline_and_shipped(classic, df, model,
                                                                          monkeypatch):
    import hashlib
    from sparknet_ml.driver import exchange
    from sparknet_ml.persistence.onnx_file import serialized
    from sparknet_ml.tasks.states import Shipped
    onnx = model.copy().setScoringBackend("onnxruntime")
    raw, prediction, _ = outputs(onnx, df)
    np.testing.assert_array_equal(raw, classic["onnx_outputs"][0])
    np.testing.assert_array_equal(prediction, classic["onnx_outputs"][1])
    monkeypatch.setattr(exchange, "PLAN_SHARE", 1e-6)  # the model takes the file route
    data = serialized(onnx._onnx_model())
    assert isinstance(exchange.share_model(df.sparkSession, data,
                                           hashlib.sha256(data).hexdigest()), Shipped)
    np.testing.assert_array_equal(outputs(onnx, df)[0], raw)


@pytest.mark.parametrize("rounds_per_job", [1, "auto"])
def test_states_travel_over_the_clients_state_server_to_the_classic_weights(df, model,
                                                                           rounds_per_job):
    same_weights(lenet(roundsPerJob=rounds_per_job).fit(df), model)


@pytest.mark.parametrize("rounds_per_job", [1, "auto"])
def test_states_carried_through_spark_give_the_classic_weights(df, model, rounds_per_job,
                                                               monkeypatch):
    """spark.sparknet.stateServer=false: no state server is opened on the client (opening
    one fails the test); the states go in the task functions and the jobs' rows."""
    from sparknet_ml.driver import fit

    def no_server(*args, **kwargs):
        raise AssertionError("the client's state server was opened")
    monkeypatch.setattr(fit, "StateServer", no_server)
    df.sparkSession.conf.set("spark.sparknet.stateServer", "false")
    try:
        same_weights(lenet(roundsPerJob=rounds_per_job).fit(df), model)
    finally:
        df.sparkSession.conf.unset("spark.sparknet.stateServer")
