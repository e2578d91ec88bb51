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
        caffe.Net(path, caffe.TEST)
else:
    make_solver(spec["net"], spec["solver"], spec["batch"])
"""


def check_caffe_builds(net_text: str, solver_text: str | None, batch_size: int) -> None:
    """Raise ValueError carrying Caffe's own message when it cannot build this solver (or,
    with ``solver_text`` None, this TEST-phase net: a deploy net for scoring).

    The solver or net is built (CPU, no data) in a child Python; a glog fatal line such as
    ``Check failed: ...`` becomes the error text.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump({"net": net_text, "solver": solver_text, "batch": batch_size}, f)
        f.flush()
        done = subprocess.run([sys.executable, "-c", _BUILD, f.name], capture_output=True,
                              text=True, env=dict(os.environ, GLOG_minloglevel="2"))
    if done.returncode == 0:
        return
    fatal = [line.split("] ", 1)[-1] for line in done.stderr.splitlines()
             if line.startswith("F") and "] " in line]
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    raise ValueError(f"Caffe cannot build this net: {fatal[0] if fatal else last}")


@functools.lru_cache(maxsize=8)
def check_deploy_builds(net_text: str) -> None:
    """:func:`check_caffe_builds` for a deploy net, once per net text in this process (a
    model scored again is not probed again)."""
    check_caffe_builds(net_text, None, 0)
