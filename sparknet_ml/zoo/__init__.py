"""Reference nets as Caffe prototxt text, with their solvers.

LeNet (``lenet_train_test``, ``lenet_train``) and ``cifar10_quick_train``, and Caffe's model-zoo
ImageNet nets copied unchanged from the pinned sdist's ``models/`` folder (BSD-2 licensed):
``bvlc_reference_caffenet_*``, ``bvlc_alexnet_*``, ``bvlc_googlenet_*`` and
``finetune_flickr_style_*``, each as ``<name>_train_val`` and ``<name>_solver``.

>>> "SoftmaxWithLoss" in prototxt("lenet_train")
True
"""
from __future__ import annotations

import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def prototxt(name: str) -> str:
    """Return the text of ``sparknet_ml/zoo/<name>.prototxt``."""
    path = os.path.join(_HERE, f"{name}.prototxt")
    if not os.path.exists(path):
        known = sorted(f[:-len(".prototxt")] for f in os.listdir(_HERE) if f.endswith(".prototxt"))
        raise ValueError(f"no zoo prototxt {name!r}; known: {', '.join(known)}")
    with open(path) as f:
        return f.read()
