import json
import os

import pytest

caffe = pytest.importorskip("caffe", reason="pycaffe is not installed: run `make setup`")


def build_info() -> dict:
    """The build_info.json our wheel writes into the caffe package."""
    with open(os.path.join(os.path.dirname(caffe.__file__), "build_info.json")) as f:
        return json.load(f)


def caffe_devices() -> list:
    """CPU always; GPU 0 too when this pycaffe was built with CUDA."""
    devices = [pytest.param(None, id="cpu")]
    if build_info()["cuda"]:
        devices.append(pytest.param(0, id="gpu0"))
    return devices
