"""Build a net once in a child process before the driver does: a Caffe CHECK failure aborts
the process it happens in, and a user's notebook must not be that process."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile

_BUILD = """
import json, sys
import caffe
from sparknet_ml.engine.solver import make_solver, prototxt_file
spec = json.load(open(sys.argv[1]))
if spec["solver"] is None:
    with prototxt_file(spec["net"]) as path:
        net = caffe.Net(path, caffe.TRAIN if spec["train"] else caffe.TEST)
    print(json.dumps({"blobs": {name: list(b.data.shape) for name, b in net.blobs.items()},
                      "params": {name: [list(b.data.shape) for b in bs]
                                 for name, bs in net.params.items()}}))
else:
    make_solver(spec["net"], spec["solver"], spec["batch"])
"""


def _build(net_text: str, solver_text: str | None, batch_size: int, train: bool):
    """Build the solver (or, with ``solver_text`` None, the net) in a child Python."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump({"net": net_text, "solver": solver_text, "batch": batch_size,
                   "train": train}, f)
        f.flush()
        return subprocess.run([sys.executable, "-c", _BUILD, f.name], capture_output=True,
                              text=True, env=dict(os.environ, GLOG_minloglevel="2"))


def _failing_layer(net_text: str, train: bool) -> str | None:
    """The first layer whose set-up fails, by building ever longer prefixes of the net
    (a bisection: log2(layers) child processes; only after a failure), or None when the whole
    net builds (the solver failed)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net = text_format.Parse(net_text, caffe_pb2.NetParameter())

    def builds(count: int) -> bool:
        prefix = caffe_pb2.NetParameter()
        prefix.CopyFrom(net)
        del prefix.layer[count:]
        return _build(text_format.MessageToString(prefix), None, 0, train).returncode == 0

    if builds(len(net.layer)):
        return None
    low, high = 1, len(net.layer)  # the shortest failing prefix lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if builds(middle) else (low, middle)
    return net.layer[low - 1].name


def _failure(done, net_text: str, train: bool) -> ValueError:
    """The error for a failed build: glog's fatal line (``Check failed: ...``) and the layer
    whose set-up fails."""
    fatal = [line.split("] ", 1)[-1] for line in done.stderr.splitlines()
             if line.startswith("F") and "] " in line]
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    layer = _failing_layer(net_text, train)
    where = f"layer {layer!r}: " if layer else ""
    return ValueError(f"Caffe cannot build this net: {where}{fatal[0] if fatal else last}")


def check_caffe_builds(net_text: str, solver_text: str, batch_size: int) -> None:
    """Raise ValueError carrying Caffe's own message, and the layer at fault, when it cannot
    build this solver (built on the CPU, with no data, in a child Python)."""
    done = _build(net_text, solver_text, batch_size, True)
    if done.returncode:
        raise _failure(done, net_text, True)


@functools.lru_cache(maxsize=8)
def _deploy_shapes(net_text: str) -> dict:
    done = _build(net_text, None, 0, False)
    if done.returncode:
        raise _failure(done, net_text, False)
    return json.loads(done.stdout.strip().splitlines()[-1])


def deploy_blob_shapes(net_text: str) -> dict[str, tuple[int, ...]]:
    """Build a deploy (TEST-phase) net in a child Python and return its blobs' shapes; once
    per net text in this process (a model scored again is not probed again).

    Raises
    ------
    ValueError
        With Caffe's message and the layer at fault, when Caffe cannot build it.
    """
    return {name: tuple(shape) for name, shape in _deploy_shapes(net_text)["blobs"].items()}


def deploy_param_shapes(net_text: str) -> dict[str, list[tuple[int, ...]]]:
    """The shapes of every learnable blob of the deploy net, by layer, as Caffe sets it up
    (built as by :func:`deploy_blob_shapes`, which shares the child process)."""
    return {name: [tuple(s) for s in shapes]
            for name, shapes in _deploy_shapes(net_text)["params"].items()}
