"""The numpy DataTransformer against a line-by-line transcription of Caffe's
``DataTransformer<Dtype>::Transform(const Datum&, ...)`` (src/caffe/data_transformer.cpp)."""
import numpy as np
import pytest

from sparknet_ml.engine.transform import Transform


def caffe_transform(datum, crop, h_off, w_off, mirror, scale, mean_image, mean_values):
    """Caffe's loops, index for index, in float32."""
    channels, datum_height, datum_width = datum.shape
    height, width = crop if crop else (datum_height, datum_width)
    data, out = datum.reshape(-1), np.empty(channels * height * width, np.float32)
    mean = None if mean_image is None else mean_image.reshape(-1)
    values = list(mean_values) * (channels if len(mean_values) == 1 else 1)
    for c in range(channels):
        for h in range(height):
            for w in range(width):
                data_index = (c * datum_height + h_off + h) * datum_width + w_off + w
                top_index = ((c * height + h) * width + (width - 1 - w) if mirror
                             else (c * height + h) * width + w)
                element = np.float32(data[data_index])
                if mean is not None:
                    out[top_index] = (element - mean[data_index]) * np.float32(scale)
                elif values:
                    out[top_index] = (element - np.float32(values[c])) * np.float32(scale)
                else:
                    out[top_index] = element * np.float32(scale)
    return out.reshape(channels, height, width)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("mean", ["image", "values", "one value", None])
def test_training_crops_and_flips_match_caffe_element_for_element(dtype, mean):
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (6, 3, 9, 11)) if dtype == np.uint8
         else rng.normal(size=(6, 3, 9, 11)) * 50).astype(dtype)
    mean_image = rng.uniform(0, 255, (3, 9, 11)).astype(np.float32) if mean == "image" else None
    values = {"values": (104.0, 117.0, 123.0), "one value": (100.0,)}.get(mean, ())
    transform = Transform(0.017, values, mean_image, crop=(7, 6), mirror=True)
    rows = np.array([4, 0, 5, 5, 2])
    offsets, flips = transform.draw(np.random.default_rng(3), len(rows), x.shape[1:])
    out = transform.apply(x, rows, offsets, flips)
    assert out.shape == (5, 3, 7, 6) and out.dtype == np.float32
    for i, row in enumerate(rows):
        expected = caffe_transform(x[row], (7, 6), *offsets[i], flips[i], 0.017, mean_image,
                                   values)
        np.testing.assert_array_equal(out[i], expected)


def test_scoring_takes_caffes_center_crop_and_never_flips():
    x = np.random.default_rng(1).integers(0, 256, (3, 3, 256, 256)).astype(np.uint8)
    mean_image = np.random.default_rng(2).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    transform = Transform(1.0, (), mean_image, crop=(227, 227), mirror=True)
    assert transform.center((3, 256, 256)) == (14, 14)  # (256 - 227) / 2, as C++ rounds
    out = transform.apply(x)
    for i in range(3):
        np.testing.assert_array_equal(
            out[i], caffe_transform(x[i], (227, 227), 14, 14, False, 1.0, mean_image, ()))


def test_draws_cover_every_offset_flip_half_the_time_and_repeat_from_the_seed():
    transform = Transform(crop=(5, 3), mirror=True)
    offsets, flips = transform.draw(np.random.default_rng(7), 20000, (1, 8, 4))
    assert set(offsets[:, 0]) == set(range(4)) and set(offsets[:, 1]) == {0, 1}
    assert 0.48 < flips.mean() < 0.52
    again = transform.draw(np.random.default_rng(7), 20000, (1, 8, 4))
    np.testing.assert_array_equal(again[0], offsets)
    np.testing.assert_array_equal(again[1], flips)
    assert not Transform(0.5, (1.0,)).random and Transform(mirror=True).random


def test_writes_into_a_blob_and_describes_itself():
    x = np.full((2, 1, 4, 4), 3, np.uint8)
    blob = np.empty((2, 1, 2, 2), np.float32)
    mean = np.ones((1, 4, 4), np.float32)
    transform = Transform(2.0, (), mean, crop=(2, 2))
    assert transform.apply(x, out=blob) is blob and (blob == 4).all()
    described = transform.describe()
    assert described["crop"] == [2, 2] and len(described["mean_image"]) == 64
    assert Transform(2.0, (), mean * 2, crop=(2, 2)).describe() != described
