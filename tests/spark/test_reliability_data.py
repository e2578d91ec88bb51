"""Data problems found by the validation pass before round 1, divergence, odd partitioning."""
import re

import numpy as np
import pytest

pytest.importorskip("caffe")

from pyspark.sql import functions as F  # noqa: E402

from .test_estimator import fashion_df, lenet  # noqa: E402


@pytest.fixture(scope="module")
def small(spark):
    return fashion_df(spark, "train", 600).cache()


def with_bad_rows(df, column, value):
    from pyspark.ml.functions import array_to_vector, vector_to_array
    bad = F.when(F.col("label") == 3, F.array_repeat(F.lit(value), 784)).otherwise(
        vector_to_array("features"))
    return df.withColumn("features", array_to_vector(bad)) if column == "features" else df


def test_nan_features_stop_the_fit_unless_skipped(small):
    bad = with_bad_rows(small, "features", float("nan"))
    count = bad.filter(F.col("label") == 3).count()
    with pytest.raises(ValueError, match=rf"{count} rows have a null or NaN/Inf value in "
                                         r"'features' or 'label'; clean them or set "
                                         r"handleInvalid='skip'"):
        lenet(maxIter=1).fit(bad)
    model = lenet(maxIter=2, handleInvalid="skip").fit(bad)
    assert np.isfinite(model.history["loss"]).all()


@pytest.fixture(scope="module")
def scoring(small):
    """A LeNet fitted in 2 iterations, and 60 rows with an id: 6 rows (label 3) have Inf
    features, and the same rows without them."""
    model = lenet(maxIter=1, syncInterval=2).fit(small)
    rows = small.limit(60).withColumn("id", F.monotonically_increasing_id()).cache()
    return model, rows, with_bad_rows(rows, "features", float("inf"))


def bad_ids(df):
    return {r.id for r in df.filter(F.col("label") == 3).select("id").collect()}


@pytest.mark.parametrize("value", [float("inf"), float("nan"), None])
def test_invalid_features_stop_transform_naming_the_row(scoring, value):
    """Hardening round 2, item 5: Inf features were scored silently (prediction 4.0)."""
    model, rows, _ = scoring
    bad = with_bad_rows(rows, "features", value) if value is not None else rows.withColumn(
        "features", F.when(F.col("label") == 3, None).otherwise(F.col("features")))
    with pytest.raises(Exception) as error:
        model.transform(bad).collect()
    found = re.search(r"features column 'features': row (\d+) of partition (\d+) "
                      r"\(label=3.0, id=(\d+)\) (holds NaN or Inf|is null); clean it, or set "
                      r"handleInvalid='skip' \(leave such rows out\) or 'keep' \(NaN outputs\) "
                      "on the model", str(error.value))
    assert found, str(error.value)[-2000:]
    assert int(found[3]) in bad_ids(rows)
    assert found[4] == ("is null" if value is None else "holds NaN or Inf")


@pytest.mark.parametrize("backend", ["caffe", "onnxruntime"])
def test_invalid_features_are_skipped_or_kept_as_nan_at_transform(scoring, backend):
    pytest.importorskip("onnxruntime" if backend == "onnxruntime" else "caffe")
    model, rows, bad = scoring
    model = model.copy({model.scoringBackend: backend, model.outputBlobs: ["ip1"]})
    ids = bad_ids(rows)
    clean = {r.id: r for r in model.transform(rows).collect()}
    skipped = model.copy({model.handleInvalid: "skip"}).transform(bad).collect()
    assert {r.id for r in skipped} == set(clean) - ids
    assert all(r.prediction == clean[r.id].prediction for r in skipped)
    kept = model.copy({model.handleInvalid: "keep"}).transform(bad).collect()
    assert {r.id for r in kept} == set(clean)
    for r in kept:
        outputs = np.concatenate([r.rawPrediction.toArray(), r.probability.toArray(),
                                  [r.prediction], r.ip1])
        if r.id in ids:
            assert np.isnan(outputs).all()
        else:
            assert r.prediction == clean[r.id].prediction
            np.testing.assert_allclose(r.probability.toArray(),
                                       clean[r.id].probability.toArray(), rtol=1e-5)


def test_null_labels_count_as_invalid(small):
    bad = small.withColumn("label", F.when(F.col("label") == 1, None).otherwise(F.col("label")))
    with pytest.raises(ValueError, match="rows have a null or NaN/Inf value"):
        lenet(maxIter=1).fit(bad)


def test_labels_out_of_range_or_fractional_are_refused(small):
    with pytest.raises(ValueError, match=r"ranges over \[3, 12\] but the net has 10 outputs"):
        lenet(maxIter=1).fit(small.withColumn("label", F.col("label") + 3))
    with pytest.raises(ValueError, match="labels are not integers"):
        lenet(maxIter=1).fit(small.withColumn("label", F.col("label") / 2))


def test_features_of_the_wrong_length_are_a_clear_error_not_an_abort(spark, small):
    from pyspark.ml.functions import array_to_vector
    short = spark.createDataFrame([([0.5] * 100, 1.0)], "pixels array<double>, label double")
    short = short.withColumn("features", array_to_vector("pixels"))
    with pytest.raises(ValueError, match="has 100 values, expected 784"):
        lenet(maxIter=1).fit(short)
    model = lenet(maxIter=1).fit(small)
    with pytest.raises(Exception, match="has 100 values, expected 784"):
        model.transform(short).collect()


def test_diverging_training_stops_naming_the_round_and_partition(small):
    with pytest.raises(FloatingPointError, match=r"round \d+: the loss of partition \d is nan: "
                                                 r"training diverged; the learning rate was at "
                                                 r"most base_lr 1e\+08 \(lr_policy 'inv'\): "
                                                 "lower base_lr"):
        lenet(maxIter=5, baseLr=1e8).fit(small)


def test_a_rising_schedule_is_blamed_for_divergence_not_base_lr(small):
    """Hardening round 2, item 4: a schedule that stays finite but grows (exp, gamma 3) is
    named as the cause; lowering base_lr is not the advice."""
    solver = 'base_lr: 0.01 momentum: 0.9 lr_policy: "exp" gamma: 3'
    with pytest.raises(FloatingPointError, match=r"round \d+: .*: training diverged; "
                                                 r"lr_policy 'exp' \(base_lr 0.01, gamma 3.0\) "
                                                 r"raised the learning rate to .* x base_lr: "
                                                 "make the schedule decay$"):
        lenet(maxIter=5).setSolverPrototxt(solver).fit(small)


def test_more_partitions_than_rows_skips_the_empty_ones(spark):
    tiny = fashion_df(spark, "train", 3, partitions=1)
    model = lenet(maxIter=2, syncInterval=2, numWorkers=6).fit(tiny)
    per_worker = 2 * 64
    assert set(model.history["samples"]) == {3 * per_worker}  # 3 non-empty partitions of 6


def test_cross_validation_is_the_same_in_parallel(small):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
    est = lenet(maxIter=2, syncInterval=5)
    grid = ParamGridBuilder().addGrid(est.baseLr, [0.01, 0.05]).build()
    metrics = []
    for parallelism in (1, 2):
        cv = CrossValidator(estimator=est, estimatorParamMaps=grid, numFolds=2, seed=3,
                            parallelism=parallelism,
                            evaluator=MulticlassClassificationEvaluator(metricName="accuracy"))
        metrics.append(cv.fit(small).avgMetrics)
    assert metrics[0] == metrics[1]


def test_a_net_caffe_would_abort_on_is_refused_with_caffes_message(spark, small):
    import os
    from sparknet_ml import zoo
    too_big = zoo.prototxt("lenet_train").replace("num_output: 20 kernel_size: 5",
                                                  "num_output: 20 kernel_size: 40")
    with pytest.raises(ValueError, match="Caffe cannot build this net: .*Check failed"):
        lenet(maxIter=1).setNetPrototxt(too_big).fit(small)
    assert os.getpid() and spark.range(1).count() == 1  # the driver (and its JVM) live on
