"""The weights an export takes are checked against Caffe's shapes, naming the layer; an old
caffemodel's legacy 4-D blobs are reshaped as Caffe's loader reshapes them."""
import numpy as np
import pytest

from sparknet_ml.engine.scoring import conform_weights

SHAPES = {"fc": [(10, 32), (10,)]}


def test_legacy_4d_blobs_take_the_nets_shapes():
    weights = {"fc": [np.ones((1, 1, 10, 32)), np.ones((1, 1, 1, 10))], "unused": [np.ones(3)]}
    conformed = conform_weights(weights, SHAPES)
    assert [b.shape for b in conformed["fc"]] == [(10, 32), (10,)]
    assert conformed["fc"][0].dtype == np.float32 and "unused" not in conformed


@pytest.mark.parametrize("weights, message", [
    ({}, "no weights for layer 'fc'"),
    ({"fc": [np.ones((10, 32))]}, "layer 'fc' has 2 blobs, the weights give 1"),
    ({"fc": [np.ones((32, 10)), np.ones(10)]},
     r"layer 'fc': blob 0 of the weights has shape \[32, 10\], the net's is \[10, 32\]"),
    ({"fc": [np.ones((1, 2, 10, 32)), np.ones(10)]}, r"blob 0 .* \[1, 2, 10, 32\]"),
])
def test_weights_that_do_not_fit_name_the_layer(weights, message):
    with pytest.raises(ValueError, match=message):
        conform_weights(weights, SHAPES)
