"""The zoo's copies of Caffe's model-zoo files are the pinned sdist's own, byte for byte."""
import os
import tarfile

import pytest

from sparknet_ml import zoo
from sparknet_ml.build.cache import cache_root
from sparknet_ml.build.source import SDIST_NAME, SDIST_VERSION, resolve_source

STOCK = ("bvlc_reference_caffenet", "bvlc_alexnet", "bvlc_googlenet", "finetune_flickr_style")


@pytest.mark.parametrize("name", STOCK)
def test_stock_model_zoo_files_are_unchanged_copies_of_the_sdists(name):
    sdist = resolve_source(None, os.path.join(cache_root(), "sources"))  # checked by sha256
    with tarfile.open(sdist) as tar:
        for kind in ("train_val", "solver"):
            member = f"{SDIST_NAME}-{SDIST_VERSION}/models/{name}/{kind}.prototxt"
            assert tar.extractfile(member).read().decode() == zoo.prototxt(f"{name}_{kind}")
