"""Caffe on one GPU without cuDNN, with the cuDNN 9 port, and PyTorch with the same layers,
in one run: training img/s of LeNet and cifar10_quick (batch 64, 256) and a CaffeNet-sized
net (batch 64).

"caffe" is the cuDNN build with every layer's engine set to CAFFE: the code a build without
cuDNN runs (im2col + one GEMM per image). "cudnn" is the same build with its default engines.
"cudnn_no_graph" is the same with Caffe's plain iterations (``caffe.set_cuda_graph(False)``:
no CUDA-graph replay). The "_tf32" columns switch TensorFloat-32 on (``caffe.set_tf32``;
PyTorch's allow_tf32 flags); the plain columns are IEEE fp32 on both sides. Caffe times
``solver.step`` with the batch already in the input blobs; PyTorch times
zero_grad/forward/cross-entropy/backward/SGD step with the batch on the GPU (cudnn.benchmark
on, as our port's cudnnFind*), eager and as a CUDA graph of the whole step replayed
("_graph"); ``*_vs_torch_best`` divides by the faster of the two. PyTorch runs in a child process
with its own bundled cuDNN (one process cannot load two cuDNN versions). LeNet and
cifar10_quick train on Fashion-MNIST images (cifar10_quick: padded to 32x32, 3 channels);
CaffeNet on random 227x227 images and labels (speed only). Needs a CUDA + cuDNN pycaffe, a
GPU and torch; elsewhere it says so and exits 0.

    python benchmarks/gpu_caffe.py [--quick] [--gpu 0] [--out FILE]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

CAFFENET = """name: "CaffeNet"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 64 dim: 3 dim: 227 dim: 227 } shape { dim: 64 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 96 kernel_size: 11 stride: 4
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
  lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
  convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 1 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm2" type: "LRN" bottom: "pool2" top: "norm2"
  lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv3" type: "Convolution" bottom: "norm2" top: "conv3"
  convolution_param { num_output: 384 pad: 1 kernel_size: 3
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" } } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4"
  convolution_param { num_output: 384 pad: 1 kernel_size: 3 group: 2
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 1 } } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5"
  convolution_param { num_output: 256 pad: 1 kernel_size: 3 group: 2
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 1 } } }
layer { name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }
layer { name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6"
  inner_product_param { num_output: 4096
    weight_filler { type: "gaussian" std: 0.005 } bias_filler { type: "constant" value: 1 } } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7"
  inner_product_param { num_output: 4096
    weight_filler { type: "gaussian" std: 0.005 } bias_filler { type: "constant" value: 1 } } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8"
  inner_product_param { num_output: 1000
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" top: "loss" }
"""
CAFFENET_SOLVER = ('base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.0005 '
                   'type: "SGD"')
CASES = (("lenet", 64), ("lenet", 256), ("cifar10_quick", 64), ("cifar10_quick", 256),
         ("caffenet", 64))
# The layer parameter holding each layer type's engine.
ENGINE_FIELDS = {"Convolution": "convolution_param", "Pooling": "pooling_param",
                 "ReLU": "relu_param", "Sigmoid": "sigmoid_param", "TanH": "tanh_param",
                 "Softmax": "softmax_param", "SoftmaxWithLoss": "softmax_param",
                 "LRN": "lrn_param"}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing windows")
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device (default 0)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "gpu-caffe.json"))
    parser.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def unavailable(info, gpu_name) -> str | None:
    """Why this benchmark cannot run here (``info``: the installed pycaffe's build info), or
    None."""
    from importlib.util import find_spec
    missing = [name for name, there in (("caffe", info), ("torch", find_spec("torch")))
               if there is None]
    if missing:
        return f"needs {' and '.join(missing)}"
    if not info.get("cudnn"):
        return "needs a pycaffe built with CUDA and cuDNN (build-caffe --cuda)"
    if not gpu_name:
        return "needs a visible GPU"
    return None


def data_for(net, batch):
    """(images, labels) as float32 arrays of one batch."""
    if net == "caffenet":
        rng = np.random.default_rng(0)
        return (rng.random((batch, 3, 227, 227), dtype=np.float32),
                rng.integers(0, 1000, batch).astype(np.float32))
    from sparknet_ml.data import fashion_mnist
    images, labels = fashion_mnist.load("train")
    x = images[:batch, None] / np.float32(255)
    if net == "cifar10_quick":
        x = np.repeat(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)
    return np.ascontiguousarray(x, dtype=np.float32), labels[:batch].astype(np.float32)


def caffe_engines(net_text: str) -> str:
    """The net with every engine-selectable layer set to Caffe's own (non-cuDNN) engine."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net = text_format.Parse(net_text, caffe_pb2.NetParameter())
    for layer in net.layer:
        if layer.type in ENGINE_FIELDS:
            message = getattr(layer, ENGINE_FIELDS[layer.type])
            message.engine = type(message).Engine.Value("CAFFE")
    return text_format.MessageToString(net)


def rate(step, batch, seconds):
    """img/s of ``step()`` (5 synchronized iterations) over at least ``seconds``."""
    step()  # warm-up: allocation, algorithm search, first kernels
    steps, started = 0, time.perf_counter()
    while steps < 20 or time.perf_counter() - started < seconds:
        step()
        steps += 5
    return steps * batch / (time.perf_counter() - started)


def caffe_solver(net, batch, gpu, engines, tf32, data):
    """The net's solver on GPU ``gpu`` (TF32 math when ``tf32``; ``engines="caffe"``: no
    cuDNN layers) with the batch ``data`` in its input blobs."""
    import caffe
    from sparknet_ml import zoo
    from sparknet_ml.engine.solver import make_solver, set_device
    set_device(gpu, tf32)
    caffe.set_random_seed(0)
    net_text = CAFFENET if net == "caffenet" else zoo.prototxt(f"{net}_train")
    solver_text = CAFFENET_SOLVER if net == "caffenet" else zoo.prototxt(f"{net}_solver")
    if engines == "caffe":
        net_text = caffe_engines(net_text)
    solver = make_solver(net_text, solver_text, batch)
    solver.net.blobs["data"].data[...], solver.net.blobs["label"].data[...] = data
    return solver


def caffe_rate(net, batch, gpu, engines, tf32, data, seconds, graph=True):
    """img/s of ``solver.step``; ``graph=False``: Caffe's plain iterations, no CUDA graph."""
    import caffe
    solver = caffe_solver(net, batch, gpu, engines, tf32, data)
    caffe.set_cuda_graph(graph)
    try:
        return rate(lambda: solver.step(5), batch, seconds)
    finally:
        caffe.set_tf32(False)
        caffe.set_cuda_graph(True)


def torch_model(net):
    """The same layers in PyTorch (Caffe's pooling rounds up: ceil_mode)."""
    from torch import nn
    if net == "lenet":
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
                             nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
                             nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    if net == "cifar10_quick":
        return nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True),
                             nn.ReLU(), nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(),
                             nn.AvgPool2d(3, 2, ceil_mode=True), nn.Conv2d(32, 64, 5, padding=2),
                             nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True), nn.Flatten(),
                             nn.Linear(1024, 64), nn.Linear(64, 10))
    lrn = dict(size=5, alpha=1e-4, beta=0.75)
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.LocalResponseNorm(**lrn), nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(),
        nn.MaxPool2d(3, 2, ceil_mode=True), nn.LocalResponseNorm(**lrn),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096),
        nn.ReLU(), nn.Dropout(), nn.Linear(4096, 1000))


def torch_step(net, gpu, tf32, data):
    """(loss function, optimizer, device) of the net's PyTorch training step on the batch
    ``data`` (cudnn.benchmark on; TF32 when ``tf32``)."""
    import torch
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.manual_seed(0)
    torch.cuda.empty_cache()  # the previous case's model is gone
    device = torch.device("cuda", gpu)
    model = torch_model(net).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    x = torch.from_numpy(data[0]).to(device)
    y = torch.from_numpy(data[1]).long().to(device)
    return lambda: torch.nn.functional.cross_entropy(model(x), y), optimizer, device


def torch_rate(net, batch, gpu, tf32, data, seconds):
    from _torch_step import eager_and_graph_rates
    loss_of, optimizer, device = torch_step(net, gpu, tf32, data)
    return eager_and_graph_rates(loss_of, optimizer, device, batch, seconds, rate)


def torch_child(args, seconds):
    import torch
    rows = {}
    for net, batch in CASES:
        row = rows[f"{net}/{batch}"] = {}
        for tf32, suffix in ((False, ""), (True, "_tf32")):
            eager, graph = torch_rate(net, batch, args.gpu, tf32, data_for(net, batch), seconds)
            row[f"torch{suffix}_img_s"], row[f"torch{suffix}_graph_img_s"] = eager, graph
    rows["versions"] = {"torch": torch.__version__, "torch_cudnn": torch.backends.cudnn.version()}
    print(json.dumps(rows))


def main():
    args = parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")  # before caffe loads glog
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    seconds = 0.5 if args.quick else 3.0
    if args.torch_child:
        return torch_child(args, seconds)
    from _machine import machine, write
    from sparknet_ml.build.command import installed_build_info
    info = installed_build_info()
    reason = unavailable(info, machine()["gpu"])
    if reason:
        print(f"gpu_caffe: skipped: {reason}")
        return
    from _torch_step import child_result
    torch = child_result(__file__, args.gpu, args.quick)  # PyTorch's columns
    rows = []
    for net, batch in CASES:
        data = data_for(net, batch)
        row = {"net": net, "batch": batch,
               "caffe_img_s": caffe_rate(net, batch, args.gpu, "caffe", False, data, seconds),
               "cudnn_img_s": caffe_rate(net, batch, args.gpu, "default", False, data, seconds),
               "cudnn_no_graph_img_s": caffe_rate(net, batch, args.gpu, "default", False, data,
                                                  seconds, graph=False),
               "cudnn_tf32_img_s": caffe_rate(net, batch, args.gpu, "default", True, data,
                                              seconds),
               **torch[f"{net}/{batch}"]}
        row = {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}
        row["cudnn_vs_caffe"] = round(row["cudnn_img_s"] / row["caffe_img_s"], 2)
        row["cudnn_vs_torch_best"] = round(
            row["cudnn_img_s"] / max(row["torch_img_s"], row["torch_graph_img_s"]), 3)
        row["cudnn_tf32_vs_torch_tf32_best"] = round(
            row["cudnn_tf32_img_s"] / max(row["torch_tf32_img_s"], row["torch_tf32_graph_img_s"]),
            3)
        rows.append(row)
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    write({"benchmark": "gpu_caffe", "caffe_build": info, **torch["versions"],
           "parameters": {"gpu": args.gpu, "min_seconds": seconds, "warmup_steps": 5,
                          "caffe_solver": "zoo *_solver.prototxt; CaffeNet: " + CAFFENET_SOLVER,
                          "torch_optimizer": "SGD momentum 0.9, weight decay 5e-4"},
           "rows": rows}, args.out)


if __name__ == "__main__":
    main()
