"""Progress bar, history plot and MLflow logging of real fits on local[2]."""
import io
import sys

import pytest

pytest.importorskip("caffe")

from sparknet_ml import SparkNetModel  # noqa: E402

from .test_estimator import fashion_df, lenet  # noqa: E402


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def small_df(spark):
    from pyspark.sql import functions as F
    return fashion_df(spark, "train", 1000).withColumn("held_out", F.rand(seed=3) < 0.2).cache()


def test_fit_shows_progress_on_a_terminal_and_plots_its_history(small_df, monkeypatch,
                                                                 tmp_path):
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    model = lenet(maxIter=4, syncInterval=5, validationCol="held_out",
                  validationInterval=2).fit(small_df)
    final = stream.getvalue().split("\r")[-1]
    assert "SparkNet" in final and "4/4" in final and "val_acc=" in final
    history = model.history
    assert history["wall_seconds"].is_monotonic_increasing
    assert (history["wall_seconds"] >= history["seconds"].cumsum() - 1e-6).all()
    parts = history[["compute_seconds", "broadcast_seconds", "average_seconds"]]
    # the slowest task's compute may have begun a moment before the task that timed the
    # round got its start state, so the parts may exceed the round by that skew
    assert (parts.sum(axis=1) < history["seconds"] + 0.02).all()
    assert (history[["compute_seconds", "average_seconds"]] > 0).all().all()
    # the start state is shared once a job: in its first round (jobs of rounds 1, 2, 3-4)
    assert (history["broadcast_seconds"] > 0).tolist() == [True, True, True, False]
    path = tmp_path / "history.png"
    model.plotHistory(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_is_silent_when_asked(small_df, monkeypatch):
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    lenet(maxIter=1, syncInterval=2, showProgress=False).fit(small_df)
    assert "SparkNet" not in stream.getvalue()


def test_an_active_mlflow_run_gets_a_child_run_per_fit(small_df, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow-skinny has no SQL store
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    with mlflow.start_run() as parent:
        model = lenet(maxIter=3, syncInterval=5, validationCol="held_out",
                      validationInterval=3).fit(small_df)
    client = mlflow.MlflowClient()
    [child] = client.search_runs([parent.info.experiment_id],
                                 f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert child.info.status == "FINISHED"
    assert child.data.params["syncInterval"] == "5"
    assert child.data.params["maxIter"] == "3"
    losses = client.get_metric_history(child.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3]
    assert [m.value for m in losses] == pytest.approx(list(model.history["loss"]))
    assert [m.step for m in client.get_metric_history(child.info.run_id,
                                                      "validation_accuracy")] == [3]
    artifacts = client.download_artifacts(child.info.run_id, "", str(tmp_path / "got"))
    net = open(f"{artifacts}/sparknet/netPrototxt.prototxt").read()
    assert net == model.getNetPrototxt()
    logged = SparkNetModel.load(f"{artifacts}/model")
    for name, blobs in model.weights.items():
        for mine, theirs in zip(blobs, logged.weights[name]):
            assert (mine == theirs).all()
