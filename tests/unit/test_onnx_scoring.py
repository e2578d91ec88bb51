"""Where onnxruntime scoring runs (engine/onnx_scoring.py's choice of execution providers), and
a forward pass over rows that are not a multiple of the batch, on a hand-built ONNX model."""
import numpy as np
import pytest

from sparknet_ml.engine.onnx_scoring import CPU, CUDA, OnnxSpec, Scorer, forward, providers

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


def _model(input_type):
    from onnx import TensorProto, helper
    cast = [helper.make_node("Cast", ["data"], ["x"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(
        cast + [helper.make_node("Mul", ["x", "two"], ["double"]),
                helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0)],
        "g", [helper.make_tensor_value_info("data", input_type, ["N", 2, 3])],
        [helper.make_tensor_value_info("double", TensorProto.FLOAT, ["N", 2, 3]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    return model.SerializeToString()


@pytest.mark.parametrize("input_type", ["float32", "uint8"])
def test_forward_runs_every_row_in_batches_and_returns_every_output(input_type):
    from onnx import TensorProto
    spec = OnnxSpec(3, "data")
    scorer = Scorer(spec, _model({"float32": TensorProto.FLOAT,
                                  "uint8": TensorProto.UINT8}[input_type]), [CPU])
    assert scorer.input_type == np.dtype(input_type) and not scorer.cuda_graph
    x = np.arange(7 * 6, dtype=np.uint8).reshape(7, 2, 3)
    for stored in (x, x.astype(np.float32)):  # uint8 pixels, or float32 rows of a binary column
        double, total = forward(scorer, spec, stored)
        np.testing.assert_array_equal(double, 2 * x.reshape(7, 6).astype(np.float32))
        np.testing.assert_array_equal(total, x.reshape(7, 6).sum(axis=1, keepdims=True))
    empty = forward(scorer, spec, x[:0])
    assert [a.shape for a in empty] == [(0, 6), (0, 1)]
    if input_type == "uint8":
        with pytest.raises(ValueError, match="exported for uint8 pixels"):
            forward(scorer, spec, x.astype(np.float32) / 255)


def test_the_cuda_scorer_binds_pads_and_matches_the_cpu_one():
    """On a GPU (skipped elsewhere): I/O-bound device buffers, the CUDA graph, a padded last
    batch; the outputs equal the CPU provider's."""
    import shutil
    from onnx import TensorProto
    if CUDA not in ort.get_available_providers() or shutil.which("nvidia-smi") is None:
        pytest.skip("needs onnxruntime-gpu and a GPU")
    spec = OnnxSpec(3, "data", "true")
    model = _model(TensorProto.UINT8)
    cuda = Scorer(spec, model, providers(spec, ort.get_available_providers(), True))
    assert cuda.session.get_providers()[0] == CUDA and cuda.cuda_graph
    x = np.arange(7 * 6, dtype=np.uint8).reshape(7, 2, 3)
    for got, want in zip(forward(cuda, spec, x), forward(Scorer(spec, model, [CPU]), spec, x)):
        np.testing.assert_array_equal(got, want)
