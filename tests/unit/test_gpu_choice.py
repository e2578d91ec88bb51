"""GPU choice without a GPU: Spark's assignment, CUDA_VISIBLE_DEVICES, and the sharing guard."""
import types

import pytest

from sparknet_ml.engine.devices import task_gpu


def assigned(*addresses):
    return {"gpu": types.SimpleNamespace(name="gpu", addresses=list(addresses))}


def test_spark_assignment_wins_and_is_renumbered_within_visible_devices():
    assert task_gpu(assigned("3"), {}) == 3
    assert task_gpu(assigned("3"), {"CUDA_VISIBLE_DEVICES": "2,3"}) == 1
    assert task_gpu(None, {"CUDA_VISIBLE_DEVICES": "5"}) == 0
    assert task_gpu({}, {}) == 0
    with pytest.raises(ValueError, match="Spark assigned GPU 1 but CUDA_VISIBLE_DEVICES=0 hides"):
        task_gpu(assigned("1"), {"CUDA_VISIBLE_DEVICES": "0"})


@pytest.fixture
def gpu_build(monkeypatch):
    pytest.importorskip("pyspark")
    from sparknet_ml.estimators import columns
    monkeypatch.setattr(columns, "caffe_has_cuda", lambda: True)
    monkeypatch.setattr(columns.shutil, "which", lambda name: "/usr/bin/" + name)
    return columns


def test_tasks_that_would_share_gpu_0_are_refused_or_kept_on_the_cpu(gpu_build):
    shared = {"spark.master": "local[2]"}
    with pytest.raises(ValueError, match="2 tasks run at once .* spark.task.resource.gpu.amount"):
        gpu_build.resolve_gpu("true", shared)
    assert gpu_build.resolve_gpu("auto", shared) is None
    scheduled = {**shared, "spark.task.resource.gpu.amount": "1"}
    assert gpu_build.resolve_gpu("true", scheduled) == 0
    one_core = {"spark.master": "spark://h:7077", "spark.executor.cores": "1"}
    assert gpu_build.resolve_gpu("auto", one_core) == 0
    assert gpu_build.task_slots({"spark.master": "yarn", "spark.executor.cores": "8",
                                 "spark.task.cpus": "2"}) == 4
    assert gpu_build.resolve_gpu("false", shared) is None
