"""The runnable apps in sparknet_ml/apps, run as a user would, and their data readers."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("caffe")

from sparknet_ml import SparkNetModel  # noqa: E402
from sparknet_ml.apps.image_folder import net_for_classes, read_image_folder  # noqa: E402
from sparknet_ml.apps.imagenet import set_classes  # noqa: E402
from sparknet_ml.data.images import resize_bilinear  # noqa: E402
from sparknet_ml import net as netlib, zoo  # noqa: E402
from sparknet_ml.persistence.caffemodel import read_mean_file  # noqa: E402

from .image_folders import write_image_folder, write_photo_folder  # noqa: E402


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"), per_class=100)


def test_image_folder_app_trains_cifar10_quick_on_three_classes(image_folder, tmp_path):
    out, plot = str(tmp_path / "model"), str(tmp_path / "history.png")
    done = subprocess.run(
        [sys.executable, "-m", "sparknet_ml.apps.image_folder", "--data", image_folder,
         "--rounds", "8", "--sync-interval", "10", "--batch", "16", "--out", out, "--plot", plot],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    assert "CIFAR10_quick" in line and "3 classes, 3x32x32 images" in line
    assert float(line.split("test accuracy ")[1].split(";")[0]) > 0.6  # chance is 1/3
    with open(os.path.join(out, "classes.json")) as f:
        assert json.load(f) == ["bag", "trouser", "tshirt"]
    with open(plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_read_image_folder_labels_by_sorted_sub_folder(spark, image_folder):
    data, classes, shape = read_image_folder(spark, image_folder)
    assert classes == ["bag", "trouser", "tshirt"] and shape == [3, 32, 32]
    counts = {}
    for row in data.select("image.origin", "label").collect():
        key = (row.origin.split("/")[-2], row.label)
        counts[key] = counts.get(key, 0) + 1
    assert counts == {("bag", 0.0): 100, ("trouser", 1.0): 100, ("tshirt", 2.0): 100}


def test_read_image_folder_refuses_one_class_and_resizes_mixed_sizes(spark, tmp_path):
    """Hardening round 2, item 11: mixed sizes ended in a traceback; they are resized as the
    ImageNet app does, to the most common size (a tie: the larger), gray to colour."""
    one = tmp_path / "one"
    write_image_folder(one, per_class=2)
    for name in ("trouser", "bag"):
        for f in (one / name).iterdir():
            f.unlink()
    with pytest.raises(ValueError, match="at least two sub-folders of images"):
        read_image_folder(spark, str(one))
    mixed = tmp_path / "mixed"
    write_image_folder(mixed, per_class=2)
    write_image_folder(mixed, per_class=1, size=30, channels=1)  # one image per class, gray
    data, classes, shape = read_image_folder(spark, str(mixed))
    assert classes == ["bag", "trouser", "tshirt"] and shape == [3, 32, 32]
    rows = data.collect()
    assert len(rows) == 6 and {len(r.image) for r in rows} == {3 * 32 * 32}
    gray = [np.frombuffer(r.image, np.uint8).reshape(3, 32, 32) for r in rows]
    assert all((g[0] == g[1]).all() and (g[1] == g[2]).all() for g in gray)


def test_class_folders_with_spaces_and_escapes_keep_their_names(spark, tmp_path):
    """Item 11: folders ``a b``, ``c#1`` and ``ü%20x`` came out URI-encoded in classes.json
    (``a%20b``, ``c%231``, ``ü%2520x``)."""
    root = write_image_folder(tmp_path / "images", per_class=2)
    for old, new in (("bag", "a b"), ("trouser", "c#1"), ("tshirt", "ü%20x")):
        os.rename(os.path.join(root, old), os.path.join(root, new))
    data, classes, _ = read_image_folder(spark, root)
    assert classes == ["a b", "c#1", "ü%20x"]
    assert sorted(r.label for r in data.collect()) == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("app", ["imagenet", "image_folder"])
def test_apps_end_bad_input_in_one_line_and_exit_code_2(app, tmp_path):
    """Item 11: the apps on a single-class folder ended in a Python traceback, exit 1."""
    one = write_image_folder(tmp_path / "one", per_class=1)
    for name in ("trouser", "bag"):
        for f in (tmp_path / "one" / name).iterdir():
            f.unlink()
    done = subprocess.run([sys.executable, "-m", f"sparknet_ml.apps.{app}", "--data", one,
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[-1] == (f"{app}: error: {one}: an image folder needs at least two sub-folders "
                         "of images (one per class), found ['tshirt']")
    assert not os.path.exists(tmp_path / "out")


def test_net_for_classes_sets_the_output_layer():
    text = net_for_classes(zoo.prototxt("cifar10_quick_train"), [3, 32, 32], 3)
    [ip2] = [layer for layer in netlib.parse_net(text).layer if layer.name == "ip2"]
    assert ip2.inner_product_param.num_output == 3


def test_imagenet_app_trains_stock_caffenet_on_photos_of_any_size(spark, tmp_path):
    """SparkNet's ImageNetApp: Fashion-MNIST pictures of three sizes (PNG, gray PNG, JPEG)
    resized to 256x256, stock CaffeNet with 3 classes, random crops and mirrors, the mean image
    computed from the training split."""
    data = write_photo_folder(tmp_path / "photos", per_class=30)
    out = str(tmp_path / "run")
    done = subprocess.run(
        [sys.executable, "-m", "sparknet_ml.apps.imagenet", "--data", data, "--net", "caffenet",
         "--batch", "8", "--sync-interval", "5", "--rounds", "6", "--base-lr", "0.001",
         "--test-fraction", "0.25", "--out", out], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("caffenet on") and "3 classes" in line
    assert float(line.split("top-1 ")[1].split(",")[0]) >= 0.5  # chance is 1/3
    assert float(line.split("top-5 ")[1].split(";")[0]) == 1.0  # 3 classes: always in the top 5
    mean = read_mean_file(os.path.join(out, "mean.binaryproto"))
    assert mean.shape == (3, 256, 256) and 0 < mean.mean() < 255
    model = SparkNetModel.load(os.path.join(out, "model"))
    assert model._meta["crop"] == [227, 227] and model.weights["fc8"][0].shape == (3, 4096)
    np.testing.assert_array_equal(model._mean_image, mean)
    with open(os.path.join(out, "classes.json")) as f:
        assert json.load(f) == ["bag", "trouser", "tshirt"]


def test_resize_bilinear_matches_pillows_upscaling():
    from PIL import Image
    picture = np.random.default_rng(0).integers(0, 256, (28, 20, 3)).astype(np.uint8)
    ours = resize_bilinear(picture, 256, 200).astype(int)
    pillow = np.asarray(Image.fromarray(picture).resize((200, 256), Image.BILINEAR)).astype(int)
    assert np.abs(ours - pillow).max() <= 1


def test_set_classes_sets_every_classifier_of_googlenet():
    net = netlib.parse_net(set_classes(zoo.prototxt("bvlc_googlenet_train_val"), 7))
    outputs = {layer.name: layer.inner_product_param.num_output for layer in net.layer
               if layer.type == "InnerProduct"}
    assert outputs["loss1/classifier"] == outputs["loss2/classifier"] == 7
    assert outputs["loss3/classifier"] == 7 and outputs["loss1/fc"] == 1024
