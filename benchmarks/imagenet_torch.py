"""Caffe (our cuDNN 9 port) against PyTorch's best on one GPU, in one run: training img/s of
Caffe's stock CaffeNet and GoogLeNet (the zoo's train_val nets, batch 128 and 256, fp32).

Caffe times raw ``solver.step`` on the stock net (its data layers replaced by an Input, the
batch already in the blobs; the stock solver). PyTorch times the same layers (Caffe's
rounded-up pooling, LRN, grouped convolutions, GoogLeNet's two auxiliary classifiers with
loss weight 0.3, SGD with momentum 0.9 and the solver's weight decay) in a child process with
its own cuDNN, two ways: eager (cudnn.benchmark on) and CUDA-graph replay of the whole step
(forward, backward, SGD). ``caffe_vs_torch_best`` is Caffe against the faster of the two
(goal >= 1.0), in IEEE fp32 on both sides and with TF32 on both ("_tf32": ``caffe.set_tf32``,
PyTorch's allow_tf32 flags); ``caffe_unfused_update_img_s`` is Caffe with its per-blob solver update
(``caffe.set_fused_update(False)``). Needs a CUDA + cuDNN pycaffe, a GPU and torch; elsewhere it says so and exits 0.

    python benchmarks/imagenet_torch.py [--quick] [--gpu 0] [--out FILE]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

CASES = (("caffenet", 128), ("caffenet", 256), ("googlenet", 128), ("googlenet", 256))
STOCK = {"caffenet": ("bvlc_reference_caffenet", 227), "googlenet": ("bvlc_googlenet", 224)}
DECAY = {"caffenet": 5e-4, "googlenet": 2e-4}


def rate(step, batch, seconds):
    """Images per second of ``step`` (5 iterations a call) after a warm-up call."""
    step()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        calls += 1
    return 5 * batch * calls / (time.perf_counter() - started)


def data_for(net, batch):
    rng = np.random.default_rng(0)
    size = STOCK[net][1]
    return (rng.normal(0, 50, (batch, 3, size, size)).astype(np.float32),
            rng.integers(0, 1000, batch).astype(np.float32))


def caffe_rate(net, batch, gpu, seconds, fused=True, tf32=False):
    """Raw ``solver.step`` img/s; ``fused=False``: Caffe's per-blob solver update;
    ``tf32``: TensorFloat-32 in cuBLAS and cuDNN."""
    import caffe
    from sparknet_ml import net as netlib, zoo
    from sparknet_ml.engine.solver import make_solver
    name, size = STOCK[net]
    text = netlib.net_to_text(netlib.train_net(zoo.prototxt(f"{name}_train_val"),
                                               (3, size, size), batch))
    caffe.set_device(gpu)
    caffe.set_mode_gpu()
    solver = make_solver(text, zoo.prototxt(f"{name}_solver"), batch)
    x, y = data_for(net, batch)
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["label"].data[...] = y
    caffe.set_fused_update(fused)
    caffe.set_tf32(tf32)  # before the first step: cudnnFind runs per math mode
    try:
        return rate(lambda: solver.step(5), batch, seconds)
    finally:
        caffe.set_fused_update(True)
        caffe.set_tf32(False)


def torch_model(net):
    """CaffeNet or GoogLeNet (with its auxiliary heads) in PyTorch, Caffe's shapes."""
    import torch
    from torch import nn
    lrn = dict(size=5, alpha=1e-4, beta=0.75)
    if net == "caffenet":
        return nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.LocalResponseNorm(**lrn), nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(),
            nn.MaxPool2d(3, 2, ceil_mode=True), nn.LocalResponseNorm(**lrn),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(),
            nn.MaxPool2d(3, 2, ceil_mode=True), nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(),
            nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 1000))

    def conv(i, o, k, s=1, p=0):
        return nn.Sequential(nn.Conv2d(i, o, k, s, p), nn.ReLU())

    class Inception(nn.Module):
        def __init__(self, i, c1, r3, c3, r5, c5, pp):
            super().__init__()
            self.b1 = conv(i, c1, 1)
            self.b2 = nn.Sequential(conv(i, r3, 1), conv(r3, c3, 3, p=1))
            self.b3 = nn.Sequential(conv(i, r5, 1), conv(r5, c5, 5, p=2))
            self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv(i, pp, 1))

        def forward(self, x):
            return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)

    def aux(i):
        return nn.Sequential(nn.AvgPool2d(5, 3, ceil_mode=True), conv(i, 128, 1), nn.Flatten(),
                             nn.Linear(2048, 1024), nn.ReLU(), nn.Dropout(0.7),
                             nn.Linear(1024, 1000))

    class GoogLeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                conv(3, 64, 7, 2, 3), nn.MaxPool2d(3, 2, ceil_mode=True),
                nn.LocalResponseNorm(**lrn), conv(64, 64, 1), conv(64, 192, 3, p=1),
                nn.LocalResponseNorm(**lrn), nn.MaxPool2d(3, 2, ceil_mode=True),
                Inception(192, 64, 96, 128, 16, 32, 32), Inception(256, 128, 128, 192, 32, 96, 64),
                nn.MaxPool2d(3, 2, ceil_mode=True), Inception(480, 192, 96, 208, 16, 48, 64))
            self.middle = nn.Sequential(Inception(512, 160, 112, 224, 24, 64, 64),
                                        Inception(512, 128, 128, 256, 24, 64, 64),
                                        Inception(512, 112, 144, 288, 32, 64, 64))
            self.top = nn.Sequential(
                Inception(528, 256, 160, 320, 32, 128, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
                Inception(832, 256, 160, 320, 32, 128, 128),
                Inception(832, 384, 192, 384, 48, 128, 128), nn.AvgPool2d(7, 1), nn.Flatten(),
                nn.Dropout(0.4), nn.Linear(1024, 1000))
            self.aux1, self.aux2 = aux(512), aux(528)

        def forward(self, x):
            a = self.stem(x)
            b = self.middle(a)
            return self.top(b), self.aux1(a), self.aux2(b)

    return GoogLeNet()


def torch_rates(net, batch, gpu, seconds, tf32=False):
    """Eager and CUDA-graph img/s of one training step of ``net``."""
    import torch
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.manual_seed(0)
    torch.cuda.empty_cache()
    device = torch.device("cuda", gpu)
    model = torch_model(net).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9,
                                weight_decay=DECAY[net])
    x, y = (torch.from_numpy(a).to(device) for a in data_for(net, batch))
    y = y.long()

    def loss_of():
        out = model(x)
        if isinstance(out, tuple):  # GoogLeNet: loss3 + 0.3 (loss1 + loss2), as Caffe's
            main, aux1, aux2 = out
            return (torch.nn.functional.cross_entropy(main, y)
                    + 0.3 * torch.nn.functional.cross_entropy(aux1, y)
                    + 0.3 * torch.nn.functional.cross_entropy(aux2, y))
        return torch.nn.functional.cross_entropy(out, y)

    from _torch_step import eager_and_graph_rates
    return eager_and_graph_rates(loss_of, optimizer, device, batch, seconds, rate)


def torch_child(args, seconds):
    import torch
    rows = {}
    for net, batch in CASES:
        eager, graph = torch_rates(net, batch, args.gpu, seconds)
        eager_tf32, graph_tf32 = torch_rates(net, batch, args.gpu, seconds, tf32=True)
        rows[f"{net}/{batch}"] = {"torch_eager_img_s": eager, "torch_graph_img_s": graph,
                                  "torch_tf32_eager_img_s": eager_tf32,
                                  "torch_tf32_graph_img_s": graph_tf32}
    rows["versions"] = {"torch": torch.__version__, "torch_cudnn": torch.backends.cudnn.version()}
    print(json.dumps(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "imagenet-torch.json"))
    args = parser.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    seconds = 0.5 if args.quick else 3.0
    if args.torch_child:
        return torch_child(args, seconds)
    from _machine import machine, write
    from gpu_caffe import unavailable
    from sparknet_ml.build.command import installed_build_info
    info = installed_build_info()
    reason = unavailable(info, machine()["gpu"])
    if reason:
        print(f"imagenet_torch: skipped: {reason}")
        return
    from _torch_step import child_result
    torch = child_result(__file__, args.gpu, args.quick)
    rows = []
    for net, batch in CASES:
        row = {"net": net, "batch": batch,
               "caffe_img_s": caffe_rate(net, batch, args.gpu, seconds),
               "caffe_unfused_update_img_s": caffe_rate(net, batch, args.gpu, seconds, False),
               "caffe_tf32_img_s": caffe_rate(net, batch, args.gpu, seconds, tf32=True),
               **torch[f"{net}/{batch}"]}
        best = max(row["torch_eager_img_s"], row["torch_graph_img_s"])
        best_tf32 = max(row["torch_tf32_eager_img_s"], row["torch_tf32_graph_img_s"])
        row = {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}
        row["caffe_vs_torch_best"] = round(row["caffe_img_s"] / best, 3)
        row["caffe_tf32_vs_torch_tf32_best"] = round(row["caffe_tf32_img_s"] / best_tf32, 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    write({"benchmark": "imagenet_torch", "caffe_build": info, **torch["versions"],
           "parameters": {"gpu": args.gpu, "min_seconds": seconds}, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
