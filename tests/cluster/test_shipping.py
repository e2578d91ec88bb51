"""pycaffe shipped to executors that lack it: the portable wheel in a venv packed by venv-pack,
passed with ``--archives env.tar.gz#env`` and run with ``spark.pyspark.python=./env/bin/python``.

The executors here share the machine with the driver, so the test asserts that their Python
workers imported caffe and sparknet_ml from the unpacked archive, never from the project's
.venv. The venv holds no pyspark: Spark puts its own pyspark.zip and py4j on the workers'
PYTHONPATH. The times of each step are printed (pytest -s) for docs/cluster.md.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

pytest.importorskip("caffe")
pytest.importorskip("venv_pack")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JOB = os.path.join(os.path.dirname(__file__), "shipped_env_job.py")
EXECUTOR_PACKAGES = ("numpy", "pyarrow", "pandas", "protobuf", "six", "tqdm")


def run(*command, cwd):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def du(path):
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


@pytest.fixture(scope="module")
def packed_env(tmp_path_factory):
    """env.tar.gz: a venv with the portable caffe wheel, sparknet_ml (not editable) and only
    the packages executors import. Yields (path, {step: seconds}, {what: bytes})."""
    tmp = tmp_path_factory.mktemp("shipping")
    seconds, sizes = {}, {}
    started = time.monotonic()
    run(sys.executable, "-m", "sparknet_ml.build", "--portable", "--skip-system-deps",
        "--out", str(tmp / "dist"), cwd=REPO)
    seconds["portable wheel"] = time.monotonic() - started
    (wheel,) = (tmp / "dist").glob("caffe-*manylinux*.whl")
    # sparknet_ml is built from a copy of the working tree: a build in the repo would leave
    # build/ and egg-info there, under the feet of whoever else works in it.
    source = tmp / "sparknet_ml-src"
    shutil.copytree(os.path.join(REPO, "sparknet_ml"), source / "sparknet_ml",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md"):
        shutil.copy(os.path.join(REPO, name), source / name)

    started = time.monotonic()
    env = tmp / "env"
    # No pip inside: the project's pip installs into it (pip --python), saving 26 MB and
    # the ensurepip step.
    run(sys.executable, "-m", "venv", "--without-pip", str(env), cwd=tmp)
    pip = (sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install",
           "--quiet", "--disable-pip-version-check")
    run(*pip, "-c", os.path.join(REPO, "constraints.txt"), *EXECUTOR_PACKAGES, str(wheel),
        cwd=tmp)
    run(*pip, "--no-deps", str(source), cwd=tmp)
    seconds["venv"] = time.monotonic() - started
    started = time.monotonic()
    archive = tmp / "env.tar.gz"
    run(os.path.join(os.path.dirname(sys.executable), "venv-pack"), "--prefix", str(env),
        "--output", str(archive), "--compress-level", "1", "--quiet", cwd=tmp)
    seconds["venv-pack"] = time.monotonic() - started
    sizes.update(wheel=wheel.stat().st_size, venv=du(env), archive=archive.stat().st_size)
    assert not (env / "bin" / "pip").exists()
    assert not list(env.glob("lib/python*/site-packages/pyspark"))
    yield archive, seconds, sizes
    shutil.rmtree(env, ignore_errors=True)  # 400 MB; pytest keeps the last 3 temp roots
    archive.unlink()


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
