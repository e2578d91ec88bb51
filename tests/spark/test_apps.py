"""The runnable apps in sparknet_ml/apps, run as a user would, and their data readers."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("caffe")

from sparknet_ml.apps.image_folder import net_for_classes, read_image_folder  # noqa: E402
from sparknet_ml import net as netlib, zoo  # noqa: E402

from .image_folders import write_image_folder  # noqa: E402


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


def test_read_image_folder_refuses_one_class_and_mixed_sizes(spark, tmp_path):
    one = tmp_path / "one"
    write_image_folder(one, per_class=2)
    for name in ("trouser", "bag"):
        for f in (one / name).iterdir():
            f.unlink()
    with pytest.raises(ValueError, match="at least two sub-folders of images"):
        read_image_folder(spark, str(one))
    mixed = tmp_path / "mixed"
    write_image_folder(mixed, per_class=2)
    write_image_folder(mixed, per_class=1, size=30)  # replaces one image per class
    with pytest.raises(ValueError, match="3x30x30, 3x32x32"):
        read_image_folder(spark, str(mixed))


def test_net_for_classes_sets_the_output_layer():
    text = net_for_classes(zoo.prototxt("cifar10_quick_train"), [3, 32, 32], 3)
    [ip2] = [layer for layer in netlib.parse_net(text).layer if layer.name == "ip2"]
    assert ip2.inner_product_param.num_output == 3
