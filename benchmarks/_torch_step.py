"""A PyTorch training step timed eager and as a CUDA graph, for gpu_caffe.py and
imagenet_torch.py (each passes its own ``rate``: how it times 5 synchronized steps)."""


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
