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


def test_a_connect_client_reaches_its_own_files_and_others_through_fsspec(tmp_path,
                                                                          monkeypatch):
    """On a Connect client a plain path is the client's disk and a URI with a scheme goes
    through fsspec (here its in-memory file system; tests/connect/test_connect_storage.py
    runs sftp://); a scheme whose package is missing is one line naming it."""
    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")  # what pyspark sets for a client
    storage.write_bytes(str(tmp_path / "a.bin"), b"x")
    assert storage.read_bytes(str(tmp_path / "a.bin"), 10, "CAP") == b"x"
    root = "memory://sparknet-unit/models"
    with storage.replacing(storage.join(root, "m"), False) as staged:
        storage.write_bytes(storage.join(staged, "metadata", "part"), b"meta")
    assert storage.list_names(root) == ["m"] and storage.is_dir(storage.join(root, "m"))
    assert storage.read_bytes(storage.join(root, "m", "metadata", "part"), 10, "CAP") == b"meta"
    with pytest.raises(storage.StorageError, match="m already exists"):
        storage.check_replaceable(storage.join(root, "m"), False, "overwrite()")
    with pytest.raises(storage.StorageError, match=r"part: 4 bytes, over the 3 bytes cap"):
        storage.read_bytes(storage.join(root, "m", "metadata", "part"), 3, "CAP")
    storage.delete(root)
    assert not storage.exists(root)
    with pytest.raises(storage.StorageError, match=r"s3a://b/m: a Spark Connect client reaches "
                                                   r"s3a:// through fsspec .*s3fs"):
        storage.exists("s3a://b/m")


def test_nothing_is_replaced_that_the_user_did_not_ask_to_lose(tmp_path):
    """Hardening round 2, item 1: ``--out`` naming a folder of the user's pictures deleted it."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "cat.png").write_bytes(b"\x89PNG")
    ours = lambda uri: os.path.isdir(os.path.join(uri, "metadata"))  # noqa: E731
    with pytest.raises(storage.StorageError, match="pictures already exists; use --overwrite"):
        storage.check_replaceable(str(pictures), False, "--overwrite", ours, "a saved model")
    with pytest.raises(storage.StorageError, match="pictures exists and is not a saved model; "
                                                   "refusing to replace it, even with "
                                                   "--overwrite"):
        with storage.replacing(str(pictures), True, "--overwrite", ours, "a saved model"):
            pytest.fail("staged a save over the user's pictures")
    assert os.listdir(pictures) == ["cat.png"] and os.listdir(tmp_path) == ["pictures"]
    empty = tmp_path / "empty"  # a variant: an empty folder loses nothing, no flag needed
    empty.mkdir()
    with storage.replacing(str(empty), False, "--overwrite", ours, "a saved model") as staged:
        storage.write_bytes(storage.join(staged, "metadata", "part-0"), b"{}")
    with storage.replacing(str(empty), True, "--overwrite", ours, "a saved model") as staged:
        storage.write_bytes(storage.join(staged, "metadata", "part-1"), b"{}")
    assert os.listdir(empty / "metadata") == ["part-1"]


def test_check_writable_leaves_nothing_behind(tmp_path):
    storage.check_writable(str(tmp_path / "new" / "deeper" / "out"))
    assert os.listdir(tmp_path) == []
    with pytest.raises(storage.StorageError, match="permission denied|cannot create"):
        storage.check_writable("/proc/sparknet-out")


def _racing_rename(monkeypatch, before):
    """storage.rename calling ``before(source, target)`` once, before the first rename."""
    rename, calls = storage.rename, []

    def racing(source, target):
        if not calls:
            calls.append(target)
            before(source, target)
        rename(source, target)
    monkeypatch.setattr(storage, "rename", racing)


def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if ".staged-" in n or ".replaced-" in n]


def test_a_save_that_loses_a_race_says_so_and_leaves_no_staging(tmp_path, monkeypatch):
    """Item 2: the loser failed with ``cannot rename ...: no such file or folder`` and left
    ``.<name>.staged-<uuid>`` behind. Another writer completes its save onto a new path in the
    moment between our check and our rename."""
    target = str(tmp_path / "model")

    def other_writer(source, destination):
        monkeypatch.undo()
        with storage.replacing(target, True) as staged:
            storage.write_bytes(storage.join(staged, "v"), b"theirs")
    _racing_rename(monkeypatch, other_writer)
    with pytest.raises(storage.StorageError, match="cannot save .*model: another writer got "
                                                   "there first"):
        with storage.replacing(target, True) as staged:
            storage.write_bytes(storage.join(staged, "v"), b"ours")
    assert _leftovers(tmp_path) == [] and (tmp_path / "model" / "v").read_bytes() == b"theirs"


def test_a_save_over_a_model_another_writer_is_moving_aside_says_so(tmp_path, monkeypatch):
    """Item 2, a variant: over an existing model, the other writer has just renamed it aside
    (the step of its swap the issue's loser tripped on)."""
    target, theirs = str(tmp_path / "model"), str(tmp_path / ".model.replaced-theirs")
    storage.write_bytes(storage.join(target, "v"), b"old")
    _racing_rename(monkeypatch, lambda source, destination: os.rename(target, theirs))
    with pytest.raises(storage.StorageError, match="another writer got there first"):
        with storage.replacing(target, True) as staged:
            storage.write_bytes(storage.join(staged, "v"), b"ours")
    assert sorted(os.listdir(tmp_path)) == [".model.replaced-theirs"]  # nothing of ours


def _save_repeatedly(target: str, mark: str, times: int, errors) -> None:
    for i in range(times):
        try:
            with storage.replacing(target, True) as staged:
                for name in ("a", "b", "c"):
                    storage.write_bytes(storage.join(staged, name), f"{mark}{i}".encode())
        except storage.StorageError as err:
            errors.put(str(err))


def test_saves_racing_in_two_processes_each_complete_or_say_so(tmp_path):
    """Item 2, as it happens: two processes saving to one path 30 times each."""
    import multiprocessing
    # spawned, not forked: a forked child would inherit the test process's SparkContext
    # (whose JVM link does not survive a fork) and reach plain paths through it
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    target = str(tmp_path / "model")
    writers = [context.Process(target=_save_repeatedly, args=(target, mark, 30, errors))
               for mark in "xy"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    while not errors.empty():
        assert "another writer got there first" in errors.get()
    assert _leftovers(tmp_path) == [] and os.listdir(tmp_path) == ["model"]
    contents = {(tmp_path / "model" / n).read_bytes() for n in "abc"}
    assert len(contents) == 1  # one save's files, never a mix
