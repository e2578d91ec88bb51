"""Conformance of both stages on a Spark Connect session (tests/stage_checks.py)."""
import pytest

pytest.importorskip("caffe")
pytest.importorskip("grpc")

from .. import stage_checks  # noqa: E402


def test_every_param_survives_save_and_load(remote, tmp_path):
    stage_checks.check_save_load(stage_checks.every_param_set(), str(tmp_path / "estimator"))
    model = stage_checks.tiny().fit(stage_checks.tiny_rows(remote))
    stage_checks.check_save_load(model, str(tmp_path / "model"))


def test_the_stages_work_in_a_pipeline(remote, tmp_path):
    stage_checks.check_pipeline(stage_checks.tiny_rows(remote), str(tmp_path / "pipeline"))
