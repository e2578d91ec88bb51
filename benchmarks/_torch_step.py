"""A PyTorch training step timed eager and as a CUDA graph, for gpu_caffe.py and
imagenet_torch.py (each passes its own ``rate``: how it times 5 synchronized steps), and the
child process PyTorch runs in for them and gpu_step_profile.py."""


def eager_and_graph(loss_of, optimizer, device):
    """(one eager step, one replay) of zero_grad / ``loss_of().backward()`` /
    ``optimizer.step()``: the replay is of the whole step captured once as a CUDA graph
    (torch.cuda.graphs' recipe: warm-up on a side stream, then capture)."""
    import torch

    def one():
        optimizer.zero_grad(set_to_none=True)
        loss_of().backward()
        optimizer.step()

    one()  # the eager warm-up: allocation, cudnn.benchmark's search
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            one()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss_of().backward()
        optimizer.step()
    return one, graph.replay


def eager_and_graph_rates(loss_of, optimizer, device, batch, seconds, rate):
    """img/s of :func:`eager_and_graph`'s eager step and of its replay, each timed by
    ``rate`` over 5 synchronized steps."""
    import torch
    one, replay = eager_and_graph(loss_of, optimizer, device)

    def run(step):
        for _ in range(5):
            step()
        torch.cuda.synchronize(device)
    return rate(lambda: run(one), batch, seconds), rate(lambda: run(replay), batch, seconds)


def child_result(script: str, gpu: int, quick: bool) -> dict:
    """The JSON that ``script --torch-child`` prints last: PyTorch measured in a child process
    with its own cuDNN (one process cannot load two cuDNN versions), without the build's
    LD_LIBRARY_PATH. Exits naming ``script`` when the child fails."""
    import json
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    done = subprocess.run([sys.executable, os.path.abspath(script), "--torch-child", "--gpu",
                           str(gpu)] + (["--quick"] if quick else []), env=env,
                          capture_output=True, text=True)
    if done.returncode:
        print(done.stderr[-3000:])
        raise SystemExit(f"{os.path.basename(script)}: the PyTorch child failed")
    return json.loads(done.stdout.strip().splitlines()[-1])
