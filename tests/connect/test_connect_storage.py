"""Models, checkpoints and inputs on a real non-local file system from a Spark Connect client:
the checks of the classic session (tests/storage_checks.py) on the tests' SFTP server, which
the client reaches through fsspec's sftp (paramiko) and the Connect server through Hadoop's
SFTPFileSystem (pyspark's own models). The client's ssh key is given the way a user gives it,
in fsspec's configuration; nothing of a save or load lands in the working directory."""
import os
from types import SimpleNamespace

import pytest

pytest.importorskip("caffe")
pytest.importorskip("grpc")
pytest.importorskip("paramiko")

from ..spark.test_bad_input import tiny  # noqa: E402
from ..storage_checks import CHECKS, Under, rows  # noqa: E402


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
def df(remote):
    return rows(remote).cache()


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
def test_storage_over_connect(check, remote, fsspec_key, sftp, df, model, monkeypatch):
    check(SimpleNamespace(spark=remote, sftp=Under(sftp, "connect"), df=df, model=model,
                          monkeypatch=monkeypatch, connect=True))


def test_a_link_inside_a_saved_folder_is_refused_over_connect(remote, fsspec_key, sftp, model,
                                                               tmp_path):
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
