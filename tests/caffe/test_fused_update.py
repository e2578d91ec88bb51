"""The fused GPU solver update (patch ``fused-solver-update``) against Caffe's own per-blob
update on the same GPU: for every SGD-family solver, L2 and L1 decay, lr_mult and decay_mult
(0, 1, 2), iter_size 1 and 2, each step's weights and history must be equal element for
element (the fused kernel writes each element's arithmetic as Caffe's kernels do).

The net is InnerProduct layers only (cuBLAS GEMMs are deterministic run to run, unlike some
cuDNN convolution algorithms), so any difference is the update's. The CPU keeps Caffe's
per-blob loop: there is no fused CPU update to compare. Runs only with a CUDA build.
"""
import numpy as np
import pytest

from .conftest import build_info, caffe

pytestmark = pytest.mark.skipif(not build_info()["cuda"], reason="this pycaffe has no CUDA")

NET = """name: "fused"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 16 dim: 20 } shape { dim: 16 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 24 weight_filler { type: "gaussian" std: 0.3 }
    bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param { lr_mult: 0.5 decay_mult: 2 } param { lr_mult: 0 decay_mult: 1 }
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 }
    bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVERS = {
    "SGD": "momentum: 0.9",
    "Nesterov": "momentum: 0.9",
    "AdaGrad": "delta: 1e-6",
    "RMSProp": "rms_decay: 0.95 delta: 1e-6",
    "AdaDelta": "momentum: 0.95 delta: 1e-6",
    "Adam": "momentum: 0.9 momentum2: 0.999 delta: 1e-8",
}


def solver(tmp_path, kind, regularization, iter_size, name):
    net = tmp_path / "net.prototxt"
    net.write_text(NET)
    text = (f'net: "{net}" type: "{kind}" {SOLVERS[kind]} base_lr: 0.05 lr_policy: "step" '
            f'gamma: 0.5 stepsize: 2 weight_decay: 0.01 regularization_type: '
            f'"{regularization}" iter_size: {iter_size} max_iter: 100 random_seed: 5 '
            f'snapshot_after_train: false average_loss: 1 display: 0')
    path = tmp_path / f"solver-{name}.prototxt"
    path.write_text(text)
    return caffe.get_solver(str(path))


@pytest.mark.parametrize("iter_size", [1, 2])
@pytest.mark.parametrize("regularization", ["L2", "L1"])
@pytest.mark.parametrize("kind", list(SOLVERS))
def test_the_fused_update_equals_caffes_per_blob_update(kind, regularization, iter_size,
                                                        tmp_path):
    caffe.set_device(0)
    caffe.set_mode_gpu()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 20)).astype(np.float32)
    y = rng.integers(0, 5, 16).astype(np.float32)
    plain = solver(tmp_path, kind, regularization, iter_size, "plain")
    fused = solver(tmp_path, kind, regularization, iter_size, "fused")
    start = plain.net.params["ip1"][0].data.copy()
    for name in plain.net.params:
        for p, f in zip(plain.net.params[name], fused.net.params[name]):
            f.data[...] = p.data
    try:
        for step in range(5):
            for s, on in ((plain, False), (fused, True)):
                s.net.blobs["data"].data[...] = x
                s.net.blobs["label"].data[...] = y
                caffe.set_fused_update(on)
                s.step(1)
            caffe.set_fused_update(True)
            for name in plain.net.params:
                for k, (p, f) in enumerate(zip(plain.net.params[name], fused.net.params[name])):
                    np.testing.assert_array_equal(f.data, p.data,
                                                  err_msg=f"step {step + 1}: {name}[{k}]")
            for k, (p, f) in enumerate(zip(plain.history, fused.history)):
                np.testing.assert_array_equal(f.data, p.data,
                                              err_msg=f"step {step + 1}: history {k}")
        assert (fused.net.params["ip1"][0].data != start).any()  # the update did something
    finally:
        caffe.set_fused_update(True)
        caffe.set_mode_cpu()
