"""Caffe's LeNet (zoo/lenet_train_test.prototxt) and solver (zoo/lenet_solver.prototxt) in
PyTorch, for time_to_accuracy.py's TorchDistributor baseline. No Spark here: TorchDistributor
pickles :func:`train` and its numpy arguments into each of its processes."""
import math
import time

import numpy as np
import torch
from torch import nn

SCALE = 0.00390625  # the prototxt's transform_param scale: 1/256 on uint8 pixels


class LeNet(nn.Module):
    """conv 20 5x5, max pool 2/2, conv 50 5x5, max pool 2/2, ip 500, ReLU, ip 10; Caffe's
    xavier weights (uniform in ±sqrt(3 / fan_in)), zero biases."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2),
            nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
        for layer in self.layers:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                bound = math.sqrt(3 / layer.weight[0].numel())
                nn.init.uniform_(layer.weight, -bound, bound)
                nn.init.zeros_(layer.bias)

    def forward(self, x):
        return self.layers(x)


def solver(model: nn.Module, base_lr=0.01, momentum=0.9, weight_decay=5e-4, gamma=1e-4,
           power=0.75):
    """lenet_solver.prototxt's SGD: biases at lr_mult 2, weight decay on every parameter
    (Caffe's default decay_mult 1), lr policy "inv": base_lr · (1 + gamma · iter)^-power.
    (PyTorch scales the momentum buffer by the current lr, Caffe by the lr of each step.)"""
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    optimizer = torch.optim.SGD([{"params": weights, "lr": base_lr},
                                 {"params": biases, "lr": 2 * base_lr}],
                                lr=base_lr, momentum=momentum, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                 lambda step: (1 + gamma * step) ** -power)
    return optimizer, schedule


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on uint8 ``images`` (n, 1, 28, 28)."""
    with torch.no_grad():
        correct = sum(int((model(images[i:i + 1000].float() * SCALE).argmax(1)
                           == labels[i:i + 1000]).sum()) for i in range(0, len(images), 1000))
    return correct / len(images)


def train(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
          test_labels: np.ndarray, epochs: int, score_every: int, batch: int = 64,
          seed: int = 0) -> dict:
    """One TorchDistributor process (gloo, DistributedDataParallel, 1 thread): ``epochs``
    passes over its shard of the uint8 (n, 784) training images (a fresh random split among
    the processes every epoch), ``batch`` rows a step. Rank 0 scores the test images every
    ``score_every`` steps and at the end, all ranks held at barriers meanwhile.

    Returns
    -------
    dict, the same on every rank
        ``timeline``: [{step, seconds, accuracy}], seconds counted from this call with the
        scoring left out; ``steps``; ``train_seconds`` (the last point's);
        ``wall_seconds``: this call's, scoring included.
    """
    started = time.perf_counter()
    import torch.distributed as dist
    from torch.nn.functional import cross_entropy
    from torch.nn.parallel import DistributedDataParallel
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(seed)
    model = DistributedDataParallel(LeNet())
    optimizer, schedule = solver(model)
    images = torch.from_numpy(train_images).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(train_labels.astype(np.int64))
    test = torch.from_numpy(test_images).reshape(-1, 1, 28, 28)
    test_labels = torch.from_numpy(test_labels.astype(np.int64))
    shard = len(images) // world
    steps = epochs * math.ceil(shard / batch)
    order = torch.Generator().manual_seed(seed)
    timeline, step, scoring = [], 0, 0.0
    for _ in range(epochs):
        mine = torch.randperm(len(images), generator=order)[rank * shard:(rank + 1) * shard]
        for rows in mine.split(batch):
            loss = cross_entropy(model(images[rows].float() * SCALE), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % score_every == 0 or step == steps:
                dist.barrier()
                paused = time.perf_counter()
                timeline.append({"step": step, "seconds": round(paused - started - scoring, 2),
                                 "accuracy": round(accuracy(model.module, test, test_labels), 4)
                                 if rank == 0 else None})
                dist.barrier()
                scoring += time.perf_counter() - paused
    result = [{"timeline": timeline, "steps": steps, "train_seconds": timeline[-1]["seconds"],
               "wall_seconds": round(time.perf_counter() - started, 2)}]
    dist.broadcast_object_list(result, src=0)
    dist.destroy_process_group()
    return result[0]
