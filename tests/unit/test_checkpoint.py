"""Checkpoints that cannot be resumed are refused before round 1 (hardening issue, item 10);
damaged ones are passed over or named (hardening round 2, item 8)."""
import logging
import re
import shutil

import numpy as np
import pytest

from sparknet_ml.driver.checkpoint import load_checkpoint, save_checkpoint
from sparknet_ml.engine.state import SolverState

LAYOUT = [("ip", 2)]
STATE = SolverState([np.ones((3, 4), np.float32), np.zeros(3, np.float32)],
                    [np.full((3, 4), 0.5, np.float32), np.zeros(3, np.float32)])


def test_a_checkpoint_resumes_the_same_fit_up_to_its_max_iter(tmp_path):
    save_checkpoint(str(tmp_path), 5, STATE, LAYOUT, [{"round": 5}], "sig", 50)
    done, state, history = load_checkpoint(str(tmp_path), "sig", LAYOUT, rounds=5)
    assert done == 5 and history == [{"round": 5}]
    np.testing.assert_array_equal(state.history[0], STATE.history[0])


def test_a_longer_fits_checkpoint_is_refused_for_a_shorter_fit(tmp_path):
    save_checkpoint(str(tmp_path), 5, STATE, LAYOUT, [], "sig", 50)
    with pytest.raises(ValueError, match="after round 5, beyond this fit's maxIter=3"):
        load_checkpoint(str(tmp_path), "sig", LAYOUT, rounds=3)


@pytest.mark.parametrize("name", ["ckpt", "ckpt.json"])
def test_a_checkpoint_dir_that_is_a_file_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_text("{}")
    with pytest.raises(ValueError, match=f"checkpointDir {path} is a file, not a folder"):
        load_checkpoint(str(path), "sig", LAYOUT, rounds=3)


def test_an_incomplete_newer_checkpoint_is_passed_over_and_cleaned_up(tmp_path):
    """A driver killed while a rename copied file by file (S3) leaves a round folder without
    all its files: the previous checkpoint is resumed, and the next save removes the rest."""
    save_checkpoint(str(tmp_path), 5, STATE, LAYOUT, [{"round": 5}], "sig", 50)
    partial = tmp_path / "round-000006"
    partial.mkdir()
    (partial / "weights.caffemodel").write_bytes(b"")
    (tmp_path / ".round-000007-0123").mkdir()  # a staged folder of a killed write
    done, _, _ = load_checkpoint(str(tmp_path), "sig", LAYOUT, rounds=10)
    assert done == 5
    save_checkpoint(str(tmp_path), 7, STATE, LAYOUT, [], "sig", 70)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000007"]


def test_a_damaged_latest_checkpoint_is_passed_over_for_the_previous_intact_one(
        tmp_path, caplog):
    """Hardening round 2, item 8: random bytes in checkpoint.json gave a bare
    UnicodeDecodeError naming no file, at every later fit on that checkpointDir."""
    save_checkpoint(str(tmp_path), 5, STATE, LAYOUT, [{"round": 5}], "sig", 50)
    shutil.copytree(tmp_path / "round-000005", tmp_path / "round-000006")
    damaged = tmp_path / "round-000006" / "checkpoint.json"
    damaged.write_bytes(np.random.default_rng(0).bytes(64))
    with caplog.at_level(logging.WARNING, logger="sparknet_ml"):
        done, _, _ = load_checkpoint(str(tmp_path), "sig", LAYOUT, rounds=10)
    assert done == 5
    assert f"passing over a damaged checkpoint: {damaged} is damaged" in caplog.text
    save_checkpoint(str(tmp_path), 6, STATE, LAYOUT, [], "sig", 60)  # replaces it
    assert load_checkpoint(str(tmp_path), "sig", LAYOUT, rounds=10)[0] == 6


@pytest.mark.parametrize("file, damage, why", [
    ("checkpoint.json", lambda data: b"\xb6" + data, "codec can't decode byte 0xb6"),
    ("checkpoint.json", lambda data: b'{"round": 5}', "not a checkpoint's JSON"),
    ("weights.caffemodel", lambda data: data[:len(data) // 2], "not a caffemodel"),
    ("weights.caffemodel", lambda data: b"", "layer 'ip' has 0 blobs, the net 2"),
    ("solverstate.binaryproto", lambda data: data[:-7], "not a SolverState"),
])
def test_a_fit_whose_only_checkpoint_is_damaged_is_refused_naming_the_file(
        tmp_path, file, damage, why):
    """Nothing intact to resume from: the fit is refused, the folder and the file at fault
    named, and the folder is left for the user to look at (never deleted unread)."""
    save_checkpoint(str(tmp_path), 5, STATE, LAYOUT, [{"round": 5}], "sig", 50)
    path = tmp_path / "round-000005" / file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=(
            f"checkpointDir {tmp_path} holds no intact checkpoint \\({re.escape(str(path))} "
            f"is damaged \\(.*{re.escape(why)}.*\\)\\): remove it to start the fit over")):
        load_checkpoint(str(tmp_path), "sig", LAYOUT, rounds=10)
    assert path.exists()
