"""Caffe's stock ImageNet nets (model-zoo files, unchanged) train and score through
SparkNetEstimator on local[2], with Caffe's crop, mirror and mean transforms.

The data: Fashion-MNIST pictures upscaled to 256x256 RGB (no ImageNet-like set is packaged).
Tiny batches and few iterations: these check that the nets run, not how well they learn.
"""
import numpy as np
import pytest

pytest.importorskip("caffe")

from sparknet_ml import SparkNetEstimator, zoo  # noqa: E402
from sparknet_ml.data import fashion_mnist  # noqa: E402
from sparknet_ml.persistence.caffemodel import mean_blob_bytes  # noqa: E402

ROWS = 8


def imagenet_shaped(count: int, offset: int = 0):
    """``count`` Fashion-MNIST pictures as 3x256x256 uint8 (nearest-neighbour upscaling; the
    channels tinted differently) and their labels."""
    images, labels = fashion_mnist.load("train")
    index = np.arange(256) * 28 // 256
    big = images[offset:offset + count][:, index][:, :, index]
    rgb = np.stack([big, big // 2 + 64, 255 - big], axis=1).astype(np.uint8)
    return rgb, labels[offset:offset + count].astype(np.float64)


@pytest.fixture(scope="module")
def pictures(spark, tmp_path_factory):
    """The DataFrame (binary uint8 features, label) and a mean.binaryproto of its pictures."""
    x, y = imagenet_shaped(ROWS)
    df = spark.createDataFrame([(bytearray(a.tobytes()), float(b), i >= ROWS - 2)
                                for i, (a, b) in enumerate(zip(x, y))],
                               "features binary, label double, held_out boolean"
                               ).repartition(2).cache()
    mean_path = tmp_path_factory.mktemp("mean") / "mean.binaryproto"
    mean_path.write_bytes(mean_blob_bytes(x.mean(axis=0).astype(np.float32)))
    return df, str(mean_path)


def stock_estimator(name, **params):
    return SparkNetEstimator(netPrototxt=zoo.prototxt(f"{name}_train_val"),
                             solverPrototxt=zoo.prototxt(f"{name}_solver"), batchSize=2,
                             syncInterval=2, maxIter=1, seed=3, showProgress=False, **params)


def check_scores(model, df, classes):
    rows = model.transform(df).select("probability", "prediction").collect()
    probabilities = np.array([r.probability.toArray() for r in rows])
    assert probabilities.shape == (ROWS, classes)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert all(0 <= r.prediction < classes for r in rows)


@pytest.fixture(scope="module")
def caffenet(spark, pictures):
    df, mean_path = pictures
    return stock_estimator("bvlc_reference_caffenet", meanFile=mean_path).fit(df)


def test_stock_caffenet_trains_a_round_and_scores_1000_classes(caffenet, pictures):
    assert caffenet._meta["input_shape"] == [3, 256, 256]  # inferred from the mean file
    assert caffenet._meta["crop"] == [227, 227] and caffenet._mean_image.shape == (3, 256, 256)
    assert np.isfinite(caffenet.history["loss"]).all()
    check_scores(caffenet, pictures[0], 1000)


@pytest.mark.parametrize("name", ["bvlc_alexnet", "bvlc_googlenet"])
def test_stock_alexnet_and_googlenet_train_a_round_and_score_1000_classes(spark, pictures, name):
    df, mean_path = pictures
    # GoogLeNet subtracts mean values and says no shape: inputShape is the stored example's;
    # its TEST phase reports top-1 and top-5 accuracy, and so does validation
    params = ({"meanFile": mean_path} if name == "bvlc_alexnet"
              else {"inputShape": [3, 256, 256], "validationCol": "held_out"})
    model = stock_estimator(name, **params).fit(df)
    assert model._meta["crop"] == ([227, 227] if name == "bvlc_alexnet" else [224, 224])
    assert np.isfinite(model.history["loss"]).all()
    if name == "bvlc_googlenet":
        last = model.history.iloc[-1]
        assert 0 <= last["validation_accuracy"] <= last["validation_top5_accuracy"] <= 1
    check_scores(model, df, 1000)


def test_flickr_style_fine_tunes_caffenet_into_its_renamed_last_layer(spark, pictures, caffenet,
                                                                       tmp_path):
    """Its ImageData layers resize to 256x256 (new_height, new_width): an image column of
    160x160 pictures is resized as Caffe would, the shape inferred from the net."""
    _, mean_path = pictures
    x, y = imagenet_shaped(ROWS)
    small = x[:, :, ::8, ::8].repeat(5, axis=2).repeat(5, axis=3)  # 160x160
    df = spark.createDataFrame(
        [((f"p{i}.png", 160, 160, 3, 16, bytearray(a.transpose(1, 2, 0).tobytes())), float(b))
         for i, (a, b) in enumerate(zip(small, y))],
        "image struct<origin: string, height: int, width: int, nChannels: int, mode: int, "
        "data: binary>, label double").repartition(2)
    caffenet.saveCaffeModel(str(tmp_path))
    tuned = stock_estimator("finetune_flickr_style", meanFile=mean_path, featuresCol="image",
                            initialWeights=str(tmp_path / "weights.caffemodel")).fit(df)
    assert tuned._meta["input_shape"] == [3, 256, 256] and tuned._meta["resize"]
    assert tuned.weights["fc8_flickr"][0].shape == (20, 4096)  # new, from its filler
    for layer in ("conv1", "fc7"):  # CaffeNet's weights after 2 steps, not the fillers' draws
        start, now = caffenet.weights[layer][0].ravel(), tuned.weights[layer][0].ravel()
        assert np.corrcoef(start, now)[0, 1] > 0.99
    check_scores(tuned, df, 20)


def test_the_stock_mean_file_path_is_read_from_the_drivers_directory(spark, pictures):
    df, _ = pictures
    with pytest.raises(ValueError, match="layer 'data': cannot read data/ilsvrc12/imagenet_mean"
                                         ".binaryproto: no such file or folder"):
        stock_estimator("bvlc_reference_caffenet").fit(df)
