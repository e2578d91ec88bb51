"""Models, checkpoints and inputs on a real non-local file system from a Spark Connect client:
the checks of the classic session (tests/storage_checks.py) on the tests' SFTP server, which
the client reaches through fsspec's sftp (paramiko) and the Connect server through Hadoop's
SFTPFileSystem (pyspark's own models). The client's ssh key is given the way a user gives it,
in fsspec's configuration; nothing of a save or load lands in the working directory. A model
saved by a classic session loads over Connect, and one saved over Connect loads in a classic
session (another process), to the same outputs.

The classic save is made before the module's Connect session opens (pyspark switches a process
to its Connect paths while a Connect session is open)."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np

import pytest

pytest.importorskip("caffe")
pytest.importorskip("grpc")
pytest.importorskip("paramiko")

from ..spark.test_bad_input import tiny  # noqa: E402
from ..storage_checks import CHECKS, Under, outputs, rows  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSIC_LOAD = """
import json, sys
from pyspark.sql import SparkSession
from sparknet_ml import SparkNetModel
from tests import sftp_server
from tests.storage_checks import outputs, rows
builder = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
for key, value in sftp_server.spark_conf(sys.argv[2]).items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()
print(json.dumps(outputs(SparkNetModel.load(sys.argv[1]), rows(spark))[0].tolist()))
"""


def raw_rows(model, df):
    """The model's raw outputs on ``df``, one row per example, sorted (``rows`` repartitions
    at random: the order differs between sessions)."""
    raw = outputs(model, df)[0]
    return raw[np.lexsort(raw.T[::-1])]


@pytest.fixture(scope="module")
def classic_saved(spark, sftp):
    """The raw outputs of a model the classic session saved to the SFTP server."""
    model = tiny().fit(rows(spark))
    model.write().save(Under(sftp, "cross").url("classic-model"))
    return raw_rows(model, rows(spark))


@pytest.fixture(scope="module")
def connect_session(classic_saved, remote):
    """The module's Connect session, opened after the classic save."""
    return remote


@pytest.fixture(scope="module")
def fsspec_key(sftp, sftp_key):
    """fsspec's sftp options, as a user's fsspec configuration would hold them."""
    import fsspec.config
    kept = fsspec.config.conf.get("sftp")
    fsspec.config.conf["sftp"] = {"key_filename": sftp_key}
    yield
    if kept is None:
        fsspec.config.conf.pop("sftp")
    else:
        fsspec.config.conf["sftp"] = kept


@pytest.fixture(scope="module")
def df(connect_session):
    return rows(connect_session).cache()


@pytest.fixture(scope="module")
def model(df):
    return tiny().fit(df)


@pytest.fixture(autouse=True)
def nothing_local(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield
    assert os.listdir(cwd) == []


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__[len("check_"):] for c in CHECKS])
def test_storage_over_connect(check, connect_session, fsspec_key, sftp, df, model, monkeypatch):
    check(SimpleNamespace(spark=connect_session, sftp=Under(sftp, "connect"), df=df, model=model,
                          monkeypatch=monkeypatch, connect=True))


def test_a_link_inside_a_saved_folder_is_refused_over_connect(connect_session, fsspec_key, sftp,
                                                               model, tmp_path):
    """sftp's folder listing describes a link itself (Hadoop's SFTP file system hides it): a
    caffemodel swapped for a link to a file outside the saved folder is not read."""
    from sparknet_ml import SparkNetModel
    where = Under(sftp, "connect-link")
    model.write().save(where.url("linked"))
    weights = where.local("linked", "model", "weights.caffemodel")
    outside = str(tmp_path / "outside.caffemodel")
    os.replace(weights, outside)
    os.symlink(outside, weights)
    with pytest.raises(ValueError, match=r"weights.caffemodel is a link or resolves outside "
                                         r"sftp://.*/linked"):
        SparkNetModel.load(where.url("linked"))


def test_saves_cross_between_classic_and_connect(classic_saved, connect_session, fsspec_key,
                                                 sftp, sftp_key):
    from sparknet_ml import SparkNetModel
    where = Under(sftp, "cross")
    loaded = SparkNetModel.load(where.url("classic-model"))  # saved classic, loaded over Connect
    np.testing.assert_array_equal(raw_rows(loaded, rows(connect_session)), classic_saved)
    loaded.write().save(where.url("connect-model"))  # saved over Connect, loaded classic
    done = subprocess.run([sys.executable, "-c", CLASSIC_LOAD, where.url("connect-model"),
                           sftp_key], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items()
                               if k != "SPARK_CONNECT_MODE_ENABLED"})
    assert done.returncode == 0, done.stderr[-3000:]
    raw = np.array(json.loads(done.stdout.strip().splitlines()[-1]), np.float64)
    np.testing.assert_array_equal(raw[np.lexsort(raw.T[::-1])], classic_saved)
