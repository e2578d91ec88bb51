import os
import shutil
import subprocess
import sys
import time

import pytest

from .standalone import StandaloneCluster

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXECUTOR_PACKAGES = ("numpy", "pyarrow", "pandas", "protobuf", "six", "tqdm")


def run(*command, cwd):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def du(path):
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


@pytest.fixture(scope="session")
def packed_env(tmp_path_factory):
    """env.tar.gz: a venv with the portable caffe wheel, sparknet_ml (not editable) and only
    the packages executors import (built once for test_shipping.py and
    test_connect_shipping.py). Yields (path, {step: seconds}, {what: bytes})."""
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


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """A standalone master and two 1-core, 2 GiB workers on 127.0.0.1 for the test module;
    stopped by pid afterwards, and checked to leave no process (JVM or Python worker) behind."""
    cluster = StandaloneCluster(str(tmp_path_factory.mktemp("standalone")), workers=2, cores=1,
                                memory="2g")
    try:
        cluster.start()
        yield cluster
    finally:
        leftovers = cluster.stop()
    assert not leftovers, f"still running after the cluster was stopped: {leftovers}"
