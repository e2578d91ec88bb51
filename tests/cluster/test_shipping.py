"""pycaffe shipped to executors that lack it: the portable wheel in a venv packed by venv-pack,
passed with ``--archives env.tar.gz#env`` and run with ``spark.pyspark.python=./env/bin/python``.

The executors here share the machine with the driver, so the test asserts that their Python
workers imported caffe and sparknet_ml from the unpacked archive, never from the project's
.venv. The venv holds no pyspark: Spark puts its own pyspark.zip and py4j on the workers'
PYTHONPATH. The times of each step are printed (pytest -s) for docs/cluster.md.
"""
import json
import os
import sys
import time

import pytest

pytest.importorskip("caffe")
pytest.importorskip("venv_pack")

JOB = os.path.join(os.path.dirname(__file__), "shipped_env_job.py")


def test_executors_run_caffe_and_sparknet_ml_from_the_shipped_archive(standalone_cluster,
                                                                      packed_env, tmp_path):
    archive, seconds, sizes = packed_env
    started = time.monotonic()
    done = standalone_cluster.submit(
        "--archives", f"{archive}#env",
        "--conf", "spark.pyspark.python=./env/bin/python",
        "--conf", f"spark.pyspark.driver.python={sys.executable}",
        "--conf", "spark.executorEnv.OPENBLAS_NUM_THREADS=1",
        JOB, cwd=str(tmp_path), timeout=400)
    seconds["spark-submit"] = time.monotonic() - started
    print("\nshipping:", json.dumps({"seconds": {k: round(v, 1) for k, v in seconds.items()},
                                     "MB": {k: round(v / 1e6) for k, v in sizes.items()}}))
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print("job:", json.dumps({"seconds": {k: round(v, 1) for k, v in result["seconds"].items()},
                              "accuracy": result["accuracy"]}))
    assert result["rounds"] == 6 and result["accuracy"] > 0.6  # chance is 0.1
    assert result["driver_executable"] == sys.executable
    assert result["python_exec"] == "./env/bin/python"

    executors = result["executors"]
    assert len({e["executor_cwd"] for e in executors}) == 2  # one task on each executor
    project_venv = os.path.dirname(os.path.dirname(sys.executable)) + os.sep
    for executor in executors:
        cwd = executor["executor_cwd"]
        unpacked = os.path.join(cwd, "env") + os.sep  # Spark unpacks --archives X#env here
        assert cwd.startswith(standalone_cluster.root + os.sep), executor  # a worker's work dir
        assert executor["sys_prefix"] + os.sep == unpacked, executor
        for key in ("sys_executable", "caffe", "sparknet_ml"):
            assert executor[key].startswith(unpacked), (key, executor)
            assert not executor[key].startswith(project_venv), (key, executor)
        # pyspark is not in the venv: Spark's own pyspark.zip serves the workers.
        assert "/python/lib/pyspark.zip/pyspark/" in executor["pyspark"], executor
