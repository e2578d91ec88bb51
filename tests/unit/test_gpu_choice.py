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


def device(host="node1", cuda=True, visible=True, assigned=False):
    from sparknet_ml.engine.devices import TaskDevice
    return TaskDevice(host, cuda, visible, assigned)


@pytest.fixture
def columns():
    pytest.importorskip("pyspark")
    from sparknet_ml.driver import columns
    return columns


def test_tasks_that_would_share_gpu_0_are_refused_or_kept_on_the_cpu(columns):
    shared, gpus = {"spark.master": "local[2]"}, [device(), device()]
    with pytest.raises(ValueError, match="2 tasks run at once .* spark.task.resource.gpu.amount"):
        columns.resolve_gpu("true", shared, gpus)
    assert columns.resolve_gpu("auto", shared, gpus) is None
    scheduled = [device(assigned=True), device(assigned=True)]
    assert columns.resolve_gpu("true", shared, scheduled) == 0
    one_core = {"spark.master": "spark://h:7077", "spark.executor.cores": "1"}
    assert columns.resolve_gpu("auto", one_core, gpus) == 0
    assert columns.task_slots({"spark.master": "yarn", "spark.executor.cores": "8",
                               "spark.task.cpus": "2"}) == 4
    assert columns.resolve_gpu("false", shared, scheduled) is None


def test_the_choice_comes_from_the_tasks_not_the_driver(columns, monkeypatch, caplog):
    """Many-GPUs issue: a driver without a GPU made a fit on GPU executors train on CPUs."""
    import logging
    from sparknet_ml.engine import devices
    monkeypatch.setattr(devices, "caffe_has_cuda", lambda: False)  # the driver's own build
    conf = {"spark.master": "spark://h:7077", "spark.executor.cores": "4"}
    executors = [device("node1", assigned=True), device("node2", assigned=True)]
    with caplog.at_level(logging.INFO, logger="sparknet_ml"):
        assert columns.resolve_gpu("auto", conf, executors) == 0
    assert "training on GPUs: 2 tasks with a CUDA pycaffe on node1, node2" in caplog.text
    mixed = [device("node1", assigned=True), device("node2", cuda=False)]
    with pytest.raises(ValueError, match="useGpu='true' but pycaffe is a CPU-only build on "
                                         "node2"):
        columns.resolve_gpu("true", conf, mixed)
    with caplog.at_level(logging.INFO, logger="sparknet_ml"):
        assert columns.resolve_gpu("auto", conf, [device("node3", visible=False)]) is None
    assert "training on the CPU: no GPU is visible to the tasks on node3" in caplog.text
    assert columns.resolve_gpu("auto", conf) is None  # no reports: the driver's own build
