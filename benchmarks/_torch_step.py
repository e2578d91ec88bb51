"""A PyTorch training step timed eager and as a CUDA graph, for gpu_caffe.py and
imagenet_torch.py (each passes its own ``rate``: how it times 5 synchronized steps)."""


def eager_and_graph_rates(loss_of, optimizer, device, batch, seconds, rate):
    """img/s of zero_grad / ``loss_of().backward()`` / ``optimizer.step()`` run eagerly, and
    of the whole step captured once as a CUDA graph and replayed (torch.cuda.graphs' recipe:
    warm-up on a side stream, then capture)."""
    import torch

    def one():
        optimizer.zero_grad(set_to_none=True)
        loss_of().backward()
        optimizer.step()

    def eager():
        for _ in range(5):
            one()
        torch.cuda.synchronize(device)
    eager_rate = rate(eager, batch, seconds)
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

    def replay():
        for _ in range(5):
            graph.replay()
        torch.cuda.synchronize(device)
    return eager_rate, rate(replay, batch, seconds)
