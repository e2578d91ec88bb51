"""Image folders of real Fashion-MNIST pictures, written as PNG files for Spark's image source."""
import os

import numpy as np

from sparknet_ml.data import fashion_mnist

CLASSES = {0: "tshirt", 1: "trouser", 8: "bag"}


def write_image_folder(root, per_class: int, size: int = 32, channels: int = 3) -> str:
    """``root/<class>/<n>.png``: ``per_class`` images of three Fashion-MNIST classes, padded
    to ``size`` x ``size``, plus a file that is not an image."""
    from PIL import Image
    images, labels = fashion_mnist.load("train")
    pad = (size - 28) // 2
    for label, name in CLASSES.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in np.flatnonzero(labels == label)[:per_class]:
            gray = np.pad(images[i], (pad, size - 28 - pad))
            pixels = np.stack([gray] * channels, axis=-1) if channels > 1 else gray
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i}.png"))
    with open(os.path.join(root, "README.txt"), "w") as f:
        f.write("not an image: Spark's image source skips it\n")
    return str(root)


def write_photo_folder(root, per_class: int) -> str:
    """``root/<class>/<n>.png|jpg``: ``per_class`` Fashion-MNIST pictures of three classes,
    upscaled to sizes that differ (96x96 to 160x128), colour PNG, gray PNG and JPEG in turn:
    what the ImageNet app resizes to 256x256."""
    from PIL import Image
    images, labels = fashion_mnist.load("train")
    sizes = [(96, 96), (160, 128), (128, 112)]
    for label, name in CLASSES.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for k, i in enumerate(np.flatnonzero(labels == label)[:per_class]):
            picture = Image.fromarray(images[i]).resize(sizes[k % 3], Image.BILINEAR)
            if k % 3 != 1:
                picture = picture.convert("RGB")
            picture.save(os.path.join(root, name, f"{i}.{'jpg' if k % 3 == 2 else 'png'}"))
    return str(root)
