"""sparknet_ml.storage on the local file system, without a SparkSession (the remote file system
is tested in tests/spark/test_storage.py)."""
import os

import pytest

from sparknet_ml import storage


def test_replacing_swaps_in_a_complete_folder_and_keeps_the_old_one_on_failure(tmp_path):
    target = str(tmp_path / "model")
    with storage.replacing(target, overwrite=False) as staged:
        assert os.path.basename(staged).startswith(".model.staged-")
        storage.write_bytes(storage.join(staged, "a", "file"), b"first")
        assert not os.path.exists(target)
    assert open(os.path.join(target, "a", "file"), "rb").read() == b"first"
    with pytest.raises(storage.StorageError, match="model already exists; use "
                                                   r"write\(\)\.overwrite\(\)"):
        with storage.replacing(target, overwrite=False):
            pytest.fail("staged a folder over an existing one")
    with pytest.raises(RuntimeError, match="killed"):
        with storage.replacing(target, overwrite=True) as staged:
            storage.write_bytes(storage.join(staged, "a", "file"), b"second")
            raise RuntimeError("killed")
    assert open(os.path.join(target, "a", "file"), "rb").read() == b"first"
    with storage.replacing(target, overwrite=True) as staged:
        storage.write_bytes(storage.join(staged, "b"), b"second")
    assert os.listdir(target) == ["b"]
    assert os.listdir(tmp_path) == ["model"]  # nothing staged or replaced is left


def test_read_bytes_checks_the_cap_and_the_folder_before_reading(tmp_path, monkeypatch):
    root = tmp_path / "saved"
    root.mkdir()
    (root / "f").write_bytes(b"12345")
    (tmp_path / "outside").write_bytes(b"secret")
    os.symlink(tmp_path / "outside", root / "link")
    assert storage.read_bytes(str(root / "f"), 5, "CAP", inside=str(root)) == b"12345"
    with pytest.raises(storage.StorageError, match=r"f: 5 bytes, over the 4 bytes cap \(CAP\)"):
        storage.read_bytes(str(root / "f"), 4, "CAP")
    for path in (root / "link", root / ".." / "outside"):
        with pytest.raises(storage.StorageError, match="is a link or resolves outside"):
            storage.read_bytes(str(path), 100, "CAP", inside=str(root))
    with pytest.raises(storage.StorageError, match=f"{root} is a folder, not a file"):
        storage.read_bytes(str(root), 100, "CAP")
    with pytest.raises(storage.StorageError, match="cannot read .*/none: no such file or folder"):
        storage.read_bytes(str(root / "none"), 100, "CAP")


def test_file_uris_are_local_and_remote_ones_need_a_session(tmp_path, monkeypatch):
    storage.write_bytes(f"file://{tmp_path}/x/y", b"data")
    assert (tmp_path / "x" / "y").read_bytes() == b"data"
    assert storage.list_names(f"file:{tmp_path}/x") == ["y"]
    monkeypatch.setattr(storage, "_session", lambda: None)  # a full run has one still active
    with pytest.raises(storage.StorageError, match="hdfs://nn/m: a hdfs:// location is reached "
                                                   "through a SparkSession's Hadoop "
                                                   "configuration; create the SparkSession"):
        storage.read_bytes("hdfs://nn/m", 10, "CAP")


@pytest.mark.parametrize("value, scheme", [
    ("hdfs://nn:8020/a", "hdfs"), ("s3a://bucket/key", "s3a"), ("file:/tmp/x", "file"),
    ("runs/lenet", None), ("/abs/path", None), ('base_lr: 0.01 lr_policy: "fixed"', None)])
def test_scheme(value, scheme):
    assert storage.scheme(value) == scheme


def test_prototxt_text_is_not_a_file():
    assert not storage.is_file('base_lr: 0.01 lr_policy: "fixed"')
    assert not storage.is_file('type: "SGD"')


def test_a_connect_client_reaches_its_own_files_and_says_so_for_others(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")  # what pyspark sets for a client
    storage.write_bytes(str(tmp_path / "a.bin"), b"x")
    assert storage.read_bytes(str(tmp_path / "a.bin"), 10, "CAP") == b"x"
    with pytest.raises(storage.StorageError, match="s3a://b/m: on a Spark Connect client "
                                                   "sparknet_ml reaches this machine's files only"):
        storage.exists("s3a://b/m")
