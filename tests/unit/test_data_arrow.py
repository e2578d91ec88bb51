"""sparknet_ml.data.arrow on Arrow arrays built in the layouts Spark 4.3 hands to mapInArrow."""
import numpy as np
import pyarrow as pa
import pytest

from sparknet_ml.data.arrow import (arrays_to_arrow, features_to_array, labels_to_array,
                                    vectors_to_arrow)

# Spark 4.3's Arrow types, as printed by a mapInArrow function's batch.schema.
VECTOR = pa.struct([pa.field("type", pa.int8(), False), pa.field("size", pa.int32()),
                    pa.field("indices", pa.list_(pa.field("element", pa.int32(), False))),
                    pa.field("values", pa.list_(pa.field("element", pa.float64(), False)))])
IMAGE = pa.struct([pa.field("origin", pa.string()), pa.field("height", pa.int32(), False),
                   pa.field("width", pa.int32(), False), pa.field("nChannels", pa.int32(), False),
                   pa.field("mode", pa.int32(), False), pa.field("data", pa.binary(), False)])


def dense(values):
    return {"type": 1, "size": None, "indices": None, "values": list(map(float, values))}


def sparse(size, indices, values):
    return {"type": 0, "size": size, "indices": list(indices), "values": list(map(float, values))}


def image(hwc, origin="x.png"):
    h, w, c = hwc.shape
    return {"origin": origin, "height": h, "width": w, "nChannels": c,
            "mode": {1: 0, 3: 16, 4: 24}[c], "data": hwc.astype(np.uint8).tobytes()}


def test_dense_vectors():
    x = np.arange(12, dtype=np.float64).reshape(2, 6) / 7
    out = features_to_array(pa.array([dense(r) for r in x], VECTOR), [1, 2, 3])
    assert out.dtype == np.float32 and out.shape == (2, 1, 2, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out.reshape(2, 6), x.astype(np.float32))


def test_sparse_and_mixed_vectors_sliced_and_chunked():
    rows = [sparse(4, [1, 3], [5, 6]), dense([1, 2, 3, 4]), sparse(4, [], []),
            dense([9, 8, 7, 6]), sparse(4, [0], [-1])]
    expected = np.array([[0, 5, 0, 6], [1, 2, 3, 4], [0, 0, 0, 0], [9, 8, 7, 6], [-1, 0, 0, 0]],
                        np.float32)
    arr = pa.array(rows, VECTOR)
    np.testing.assert_array_equal(features_to_array(arr, [4]), expected)
    np.testing.assert_array_equal(features_to_array(arr.slice(1, 3), [4]), expected[1:4])
    chunked = pa.chunked_array([arr.slice(0, 2), arr.slice(2)])
    np.testing.assert_array_equal(features_to_array(chunked, (2, 2)), expected.reshape(5, 2, 2))


def test_vector_errors_name_column_and_row():
    with pytest.raises(ValueError, match=r"pixels: row 1 has 3 values, expected 4"):
        features_to_array(pa.array([dense([1, 2, 3, 4]), dense([1, 2, 3])], VECTOR), [4],
                          name="pixels")
    with pytest.raises(ValueError, match=r"pixels: row 1 is a sparse vector of size 5, expected 4"):
        features_to_array(pa.array([dense([1, 2, 3, 4]), sparse(5, [0], [1])], VECTOR), [4],
                          name="pixels")
    with pytest.raises(ValueError, match=r"features: null feature at row 1"):
        features_to_array(pa.array([dense([1, 2]), None], VECTOR), [2])
    with pytest.raises(ValueError, match=r"row 0 has index 7 outside 0..3"):
        features_to_array(pa.array([sparse(4, [7], [1])], VECTOR), [4])


@pytest.mark.parametrize("make", [
    lambda x: pa.array(list(x), pa.list_(pa.float32())),
    lambda x: pa.array(list(x), pa.list_(pa.field("element", pa.float64()))),
    lambda x: pa.array(list(x), pa.large_list(pa.float64())),
    lambda x: pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 6),
])
def test_lists(make):
    x = np.linspace(-1, 1, 18).reshape(3, 6)
    out = features_to_array(make(x), [6])
    np.testing.assert_array_equal(out, x.astype(np.float32))
    assert out.dtype == np.float32 and out.flags.writeable
    np.testing.assert_array_equal(features_to_array(make(x).slice(1), [2, 3]),
                                  x[1:].astype(np.float32).reshape(2, 2, 3))


def test_list_errors():
    with pytest.raises(ValueError, match=r"arr: row 2 has 1 values, expected 2"):
        features_to_array(pa.array([[1.0, 2.0], [3.0, 4.0], [5.0]]), [2], name="arr")
    with pytest.raises(ValueError, match=r"arr: null feature at row 0"):
        features_to_array(pa.array([None, [1.0, 2.0]]), [2], name="arr")
    with pytest.raises(ValueError, match=r"arr: null value inside the feature at row 1"):
        features_to_array(pa.array([[1.0, 2.0], [3.0, None]]), [2], name="arr")
    with pytest.raises(ValueError, match=r"arr: unsupported feature type string"):
        features_to_array(pa.array(["a"]), [1], name="arr")
    with pytest.raises(ValueError, match=r"input_shape"):
        features_to_array(pa.array([[1.0]]), [0])


def test_float32_binary():
    x = np.random.default_rng(0).normal(size=(3, 2, 2)).astype(np.float32)
    binary = pa.array([r.astype("<f4").tobytes() for r in x], pa.binary())
    np.testing.assert_array_equal(features_to_array(binary, [2, 2]), x)
    np.testing.assert_array_equal(features_to_array(binary.slice(1), [4]), x[1:].reshape(2, 4))
    large = pa.array([r.tobytes() for r in x], pa.large_binary())
    np.testing.assert_array_equal(features_to_array(large, [2, 2]), x)


def test_uint8_binary():
    x = np.arange(3 * 16, dtype=np.uint8).reshape(3, 16) * 5
    binary = pa.array([r.tobytes() for r in x], pa.binary())
    out = features_to_array(binary, [1, 4, 4])
    np.testing.assert_array_equal(out.reshape(3, 16), x.astype(np.float32))
    assert out.max() == 235.0
    fixed = pa.array([r.tobytes() for r in x], pa.binary(16))
    np.testing.assert_array_equal(features_to_array(fixed.slice(2), [16]), x[2:].astype(np.float32))


def test_binary_errors():
    with pytest.raises(ValueError, match=r"img: row 0 has 5 bytes, expected 4 \(uint8\) or 16"):
        features_to_array(pa.array([b"12345"]), [4], name="img")
    with pytest.raises(ValueError, match=r"img: row 1 has 16 bytes, expected 4 \(uint8\)"):
        features_to_array(pa.array([b"1234", b"1" * 16]), [4], name="img")
    with pytest.raises(ValueError, match=r"img: null feature at row 1"):
        features_to_array(pa.array([b"1234", None]), [4], name="img")


def test_image_struct_is_chw_bgr():
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, size=(2, 3, 4, 3), dtype=np.uint8)  # height 3, width 4, BGR
    arr = pa.array([image(im) for im in hwc], IMAGE)
    out = features_to_array(arr, [3, 3, 4], name="image")
    assert out.shape == (2, 3, 3, 4) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, hwc.transpose(0, 3, 1, 2).astype(np.float32))
    assert out[1, 0, 2, 3] == hwc[1, 2, 3, 0]  # channel 0 is blue, as stored
    np.testing.assert_array_equal(features_to_array(arr.slice(1), [3, 3, 4]), out[1:])
    gray = pa.array([image(np.full((2, 2, 1), 7))], IMAGE)
    np.testing.assert_array_equal(features_to_array(gray, [1, 2, 2]), np.full((1, 1, 2, 2), 7.0))


def test_image_errors():
    arr = pa.array([image(np.zeros((2, 2, 3))), image(np.zeros((2, 3, 3)))], IMAGE)
    with pytest.raises(ValueError, match=r"image: image at row 1 is 3x2x3 .*expected 3x2x2"):
        features_to_array(arr, [3, 2, 2], name="image")
    with pytest.raises(ValueError, match=r"image: an image column needs input_shape"):
        features_to_array(arr, [12], name="image")
    with pytest.raises(ValueError, match=r"image: null feature at row 0"):
        features_to_array(pa.array([None], IMAGE), [3, 2, 2], name="image")


def test_empty_column():
    assert features_to_array(pa.array([], VECTOR), [1, 2]).shape == (0, 1, 2)


def test_labels():
    for arr in (pa.array([0, 2, 9], pa.int8()), pa.array([0.0, 2.0, 9.0]),
                pa.chunked_array([pa.array([0, 2], pa.int64()), pa.array([9], pa.int64())])):
        out = labels_to_array(arr)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, [0, 2, 9])
    with pytest.raises(ValueError, match=r"y: null label at row 1"):
        labels_to_array(pa.array([1.0, None]), name="y")
    with pytest.raises(ValueError, match=r"y: labels must be integers or floats"):
        labels_to_array(pa.array(["a"]), name="y")


def test_vectors_to_arrow_layout_and_round_trip():
    x = np.arange(6, dtype=np.float32).reshape(3, 2) / 3
    arr = vectors_to_arrow(x)
    assert arr.type == VECTOR
    assert arr.field("type").to_pylist() == [1, 1, 1]
    assert arr.field("size").null_count == 3 and arr.field("indices").null_count == 3
    assert arr.field("values").to_pylist()[2] == pytest.approx(x[2].tolist())
    np.testing.assert_array_equal(features_to_array(arr, [2]), x)
    assert len(vectors_to_arrow(np.zeros((0, 4)))) == 0
    with pytest.raises(ValueError, match=r"\(n, k\)"):
        vectors_to_arrow(np.zeros(3))


def test_arrays_to_arrow_layout():
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    arr = arrays_to_arrow(x)
    assert arr.type == pa.list_(pa.float32())
    assert arr.to_pylist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert arrays_to_arrow(np.zeros((2, 0))).to_pylist() == [[], []]


def test_pixels_keep_uint8_for_binary_and_image_columns():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2)
    binary = pa.array([row.tobytes() for row in x], pa.binary())
    kept = features_to_array(binary, (3, 2, 2), pixels=True)
    assert kept.dtype == np.uint8 and (kept == x).all()
    assert features_to_array(binary, (3, 2, 2)).dtype == np.float32
    floats = pa.array([row.astype(np.float32).tobytes() for row in x], pa.binary())
    assert features_to_array(floats, (3, 2, 2), pixels=True).dtype == np.float32


def test_images_of_other_sizes_are_resized_when_the_net_resizes():
    from sparknet_ml.data.images import resize_bilinear
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (h, w, 3)).astype(np.uint8) for h, w in ((5, 7), (8, 8))]
    arr = pa.array([image(p) for p in pictures], IMAGE)
    out = features_to_array(arr, (3, 6, 6), resize=True, pixels=True)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 6, 6)
    for picture, chw in zip(pictures, out):
        np.testing.assert_array_equal(chw, resize_bilinear(picture, 6, 6).transpose(2, 0, 1))
    with pytest.raises(ValueError, match="image at row 0 is 3x5x7"):
        features_to_array(arr, (3, 6, 6))
    with pytest.raises(ValueError, match="image at row 0 is 3x5x7 .* expected 1x6x6"):
        features_to_array(arr, (1, 6, 6), resize=True)  # channels are not converted


def test_decimal_labels_and_decimal_arrays_convert():
    """Hardening issue, item 12: they failed after 3 Spark jobs."""
    from decimal import Decimal
    labels = pa.array([Decimal("1"), Decimal("2.50")], pa.decimal128(10, 2))
    assert labels_to_array(labels).tolist() == [1.0, 2.5]
    features = pa.array([[Decimal("0.25"), Decimal("1")]], pa.list_(pa.decimal128(10, 2)))
    assert features_to_array(features, [2]).tolist() == [[0.25, 1.0]]
