"""Models, checkpoints and inputs on a real non-local Hadoop file system (cluster-storage
issue) from a classic session: sshd on 127.0.0.1, reached through Hadoop's SFTPFileSystem
(fixture ``sftp``); the checks are tests/storage_checks.py, which the Connect client runs too.

Every test runs in an empty working directory that must stay empty: nothing of a remote save
or load may land on the local disk outside Spark's own temporary folders."""
import os
from types import SimpleNamespace

import pytest

pytest.importorskip("caffe")

from ..storage_checks import CHECKS, Under, rows  # noqa: E402
from .test_bad_input import tiny  # noqa: E402


@pytest.fixture(scope="module")
def df(spark):
    return rows(spark).cache()


@pytest.fixture(scope="module")
def model(df):
    return tiny().fit(df)


@pytest.fixture(autouse=True)
def nothing_local(tmp_path, monkeypatch):
    """Run in an empty working directory; afterwards it is still empty and Spark's local
    directory holds no scratch copy of ours."""
    from pyspark import SparkFiles
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield
    assert os.listdir(cwd) == []
    scratch = os.path.dirname(SparkFiles.getRootDirectory())
    assert [n for n in os.listdir(scratch) if n.startswith("sparknet-io-")] == []


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__[len("check_"):] for c in CHECKS])
def test_storage(check, spark, sftp, df, model, monkeypatch):
    check(SimpleNamespace(spark=spark, sftp=Under(sftp, "classic"), df=df, model=model,
                          monkeypatch=monkeypatch, connect=False))
