"""Per-partition blocks on local disk: compact storage, atomic files, mmap reads."""
import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from sparknet_ml.tasks import blocks
from sparknet_ml.engine.devices import TaskDevice
from sparknet_ml.engine.transform import Transform


def rows_of(x, y, chunks=2):
    """Arrow batches of converted rows, as to_rows yields them."""
    for xs, ys in zip(np.array_split(x, chunks), np.array_split(y, chunks)):
        yield pa.RecordBatch.from_pydict({"features": [xs.astype(np.float32).tobytes()],
                                          "labels": [ys.astype(np.float32).tobytes()],
                                          "invalid": [1], "uint8": [False]})


def drop(handle):
    assert list(blocks.drop_blocks([blocks.handle_batch(handle)])) == []


def test_pixels_are_stored_as_uint8_and_read_back_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    x = np.random.default_rng(0).integers(0, 256, (10, 1, 4, 4)).astype(np.float32)
    y = np.arange(10, dtype=np.float32)
    handle = blocks.write_block(3, rows_of(x, y), (1, 4, 4), "fit1")
    assert handle.rows == 10 and handle.partition == 3 and handle.invalid == 2
    assert (handle.label_min, handle.label_max, handle.fractional_labels) == (0, 9, 0)
    assert handle.features_path.startswith(str(tmp_path / "sparknet_ml-blocks" / "fit1"))
    features, labels = blocks.load_block(handle)
    assert features.dtype == np.uint8 and isinstance(features, np.memmap)
    np.testing.assert_array_equal(features, x)  # labels 0..9 ascending: already canonical
    np.testing.assert_array_equal(labels, y)
    drop(handle)
    with pytest.raises(FileNotFoundError, match="training block of partition 3 is on host"):
        blocks.load_block(handle)


def test_non_pixel_values_stay_float32(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(6, 4)
    y = np.array([0, 1, 0, 1, 0.5, 0], np.float32)
    handle = blocks.write_block(0, rows_of(x, y), (4,), "fit2")
    features, labels = blocks.load_block(handle)
    assert features.dtype == np.float32 and handle.fractional_labels == 1
    order = blocks.canonical_order(x, y)
    np.testing.assert_array_equal(features, x[order])
    np.testing.assert_array_equal(labels, y[order])
    assert blocks.compact(np.array([0.0, 255.0, 256.0])).dtype != np.uint8
    assert blocks.compact(np.array([0.0, 2.5])).dtype != np.uint8


def test_empty_partition_gives_an_empty_block(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    handle = blocks.write_block(1, iter(()), (1, 2, 2), "fit3")
    features, labels = blocks.load_block(handle)
    assert handle.rows == 0 and features.shape == (0, 1, 2, 2) and labels.shape == (0,)


def test_transform_applies_mean_then_scale_per_channel():
    x = np.full((2, 3, 2, 2), 10, np.uint8)
    out = Transform(0.5, (1.0, 2.0, 3.0)).apply(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :, 0, 0], [[4.5, 4.0, 3.5]] * 2)
    blob = np.empty((2, 3, 2, 2), np.float32)
    assert Transform().apply(x, out=blob) is blob and (blob == 10).all()


def test_handles_are_small_and_hashable():
    handle = blocks.BlockHandle(0, "/a", "/b", 5, "host")
    assert dataclasses.replace(handle) == handle and hash(handle) == hash(dataclasses.replace(handle))


def test_handles_travel_as_arrow_rows_and_back():
    device = TaskDevice("host", True, True, False)
    handles = [blocks.BlockHandle(0, "/a", "/b", 5, "host", 1, -1.0, 9.0, 2, device),
               blocks.BlockHandle(1, "/c", "/d", 0, "host")]
    batches = [blocks.handle_batch(h) for h in handles]
    assert pa.Table.from_batches(batches).schema.names[-1] == "device"
    assert blocks.handles_of(batches) == handles


def test_block_content_does_not_depend_on_row_arrival_order(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (50, 6)).astype(np.float32)
    y = rng.integers(0, 3, 50).astype(np.float32)
    x[7], y[7] = x[3], y[3]  # a duplicate row
    shuffled = rng.permutation(50)
    a = blocks.write_block(0, rows_of(x, y, 3), (6,), "order-a")
    b = blocks.write_block(0, rows_of(x[shuffled], y[shuffled], 4), (6,), "order-b")
    for u, v in zip(blocks.load_block(a), blocks.load_block(b)):
        np.testing.assert_array_equal(u, v)
