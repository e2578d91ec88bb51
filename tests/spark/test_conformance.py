"""Conformance of both stages on a classic session (tests/stage_checks.py; the same checks run
on Spark Connect in tests/connect/test_connect_conformance.py)."""
import pytest

pytest.importorskip("caffe")

from sparknet_ml import SparkNetEstimator, SparkNetModel  # noqa: E402
from sparknet_ml.params import DEFAULTS  # noqa: E402

from .. import stage_checks  # noqa: E402

SCORING_SETTERS = {"featuresCol", "predictionCol", "probabilityCol", "rawPredictionCol",
                   "outputBlobs", "batchSize", "useGpu", "allowTf32", "scoringBackend"}


@pytest.fixture(scope="module")
def model(spark):
    return stage_checks.tiny().fit(stage_checks.tiny_rows(spark))


def test_estimator_params_getters_setters_and_defaults():
    stage_checks.check_params(stage_checks.every_param_set(), set(DEFAULTS))
    stage_checks.check_defaults(SparkNetEstimator)
    stage_checks.check_copy(stage_checks.tiny())


def test_model_params_getters_setters_and_defaults(model):
    stage_checks.check_params(model, SCORING_SETTERS)
    stage_checks.check_defaults(SparkNetModel)
    stage_checks.check_copy(model)


def test_every_param_survives_save_and_load(spark, model, tmp_path):
    stage_checks.check_save_load(stage_checks.every_param_set(), str(tmp_path / "estimator"))
    stage_checks.check_save_load(model, str(tmp_path / "model"))


def test_the_stages_work_in_a_pipeline(spark, tmp_path):
    stage_checks.check_pipeline(stage_checks.tiny_rows(spark), str(tmp_path / "pipeline"))
