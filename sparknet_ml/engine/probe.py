"""Build a net once in a child process before the driver does: a Caffe CHECK failure aborts
the process it happens in, and a user's notebook must not be that process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

_BUILD = """
import json, sys
from sparknet_ml.engine.solver import make_solver
spec = json.load(open(sys.argv[1]))
make_solver(spec["net"], spec["solver"], spec["batch"])
"""


def check_caffe_builds(net_text: str, solver_text: str, batch_size: int) -> None:
    """Raise ValueError carrying Caffe's own message when it cannot build this solver.

    The solver is built (CPU, no data) in a child Python; a glog fatal line such as
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
