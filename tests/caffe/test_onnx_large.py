"""A model over protobuf's 2 GiB (two InnerProduct layers of 277M weights each, 2.21 GB):
exported, checked and written as ONNX external data (the weights in ``<file>.data`` beside
the model), and onnxruntime runs the two files as the net computes. About a minute and 12 GB
of memory on the 2-core machine."""
import numpy as np
import pytest

from sparknet_ml.persistence.onnx_file import onnx_model, serialized, write_onnx
from sparknet_ml.storage import StorageError

ort = pytest.importorskip("onnxruntime")

INPUTS, OUTPUTS = 32768, 8448  # per layer 277M weights (1.1 GB); together over 2 GiB
NET = f"""layer {{ name: "data" type: "Input" top: "data"
  input_param {{ shape {{ dim: 1 dim: {INPUTS} }} }} }}
layer {{ name: "a" type: "InnerProduct" bottom: "data" top: "a"
  inner_product_param {{ num_output: {OUTPUTS} }} }}
layer {{ name: "b" type: "InnerProduct" bottom: "data" top: "b"
  inner_product_param {{ num_output: {OUTPUTS} }} }}
"""


def test_a_model_over_2_gib_is_written_with_external_data(tmp_path):
    rng = np.random.default_rng(0)
    weights = {name: [rng.standard_normal((OUTPUTS, INPUTS), dtype=np.float32),
                      rng.standard_normal(OUTPUTS, dtype=np.float32)] for name in "ab"}
    model = onnx_model(NET, weights, ["a", "b"])
    with pytest.raises(ValueError, match="over protobuf's 2 GiB .* external data"):
        serialized(model)
    path = tmp_path / "big.onnx"
    write_onnx(str(path), model)
    with pytest.raises(StorageError, match="overwrite=True"):
        write_onnx(str(path), model)
    del model
    assert path.stat().st_size < 2 ** 20
    assert (tmp_path / "big.onnx.data").stat().st_size == sum(
        b.nbytes for blobs in weights.values() for b in blobs)
    x = rng.standard_normal((3, INPUTS), dtype=np.float32)
    for got, (w, b) in zip(ort.InferenceSession(str(path)).run(None, {"data": x}),
                           weights.values()):
        want = x @ w.T + b
        assert float(np.abs(got - want).max()) <= 1e-4 * float(np.abs(want).max())
