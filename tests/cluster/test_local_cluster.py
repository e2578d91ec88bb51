"""SparkNet on local-cluster[2,1,1024]: two executor JVMs, Python workers of their own."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("caffe")


def test_fit_and_transform_on_two_executor_jvms():
    script = os.path.join(os.path.dirname(__file__), "fit_on_local_cluster.py")
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["executors"] == 2
    assert result["rounds"] == 6
    assert result["accuracy"] > 0.6  # chance is 0.1
