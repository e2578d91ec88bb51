"""Where onnxruntime scoring runs (engine/onnx_scoring.py's choice of execution providers), and
a forward pass over rows that are not a multiple of the batch, on a hand-built ONNX model."""
import numpy as np
import pytest

from sparknet_ml.engine.onnx_scoring import CPU, CUDA, OnnxSpec, forward, providers

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("use_gpu, available, visible, chosen", [
    ("auto", [CUDA, CPU], True, [(CUDA, {"device_id": 3}), CPU]),
    ("auto", [CUDA, CPU], False, [CPU]),
    ("auto", [CPU], True, [CPU]),
    ("false", [CUDA, CPU], True, [CPU]),
    ("true", [CUDA, CPU], True, [(CUDA, {"device_id": 3}), CPU]),
])
def test_providers_follow_use_gpu(use_gpu, available, visible, chosen):
    assert providers(OnnxSpec(8, "data", use_gpu, gpu=3), available, visible) == chosen


@pytest.mark.parametrize("available, visible, why", [
    ([CPU], True, "no CUDAExecutionProvider"),
    ([CUDA, CPU], False, "no GPU is visible"),
])
def test_use_gpu_true_without_cuda_is_an_error(available, visible, why):
    with pytest.raises(RuntimeError, match=f"useGpu='true' with scoringBackend='onnxruntime': "
                                           f"(this onnxruntime has )?{why}"):
        providers(OnnxSpec(8, "data", "true"), available, visible)


def test_forward_runs_every_row_in_batches_and_returns_every_output():
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Mul", ["data", "two"], ["double"]),
         helper.make_node("ReduceSum", ["data", "axes"], ["total"], keepdims=0)],
        "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 2, 3])],
        [helper.make_tensor_value_info("double", TensorProto.FLOAT, ["N", 2, 3]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), providers=[CPU])
    x = np.arange(7 * 6, dtype=np.uint8).reshape(7, 2, 3)  # uint8 pixels are fed as float32
    double, total = forward(session, OnnxSpec(3, "data"), x)
    np.testing.assert_array_equal(double, 2 * x.reshape(7, 6).astype(np.float32))
    np.testing.assert_array_equal(total, x.reshape(7, 6).sum(axis=1, keepdims=True))
    empty = forward(session, OnnxSpec(3, "data"), x[:0])
    assert [a.shape for a in empty] == [(0, 6), (0, 1)]
