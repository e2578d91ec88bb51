"""Executors take their GPU from Spark's resource scheduling: concurrent tasks never share."""
import json
import os
import stat
import subprocess
import sys


def test_concurrent_tasks_get_different_gpus_from_spark(tmp_path):
    script = tmp_path / "discover_gpus.sh"  # horovod's test trick: a fake discovery script
    script.write_text('#!/bin/sh\necho \'{"name": "gpu", "addresses": ["0", "1"]}\'\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    job = os.path.join(os.path.dirname(__file__), "gpu_scheduling_job.py")
    done = subprocess.run([sys.executable, job, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (a, a_start, a_end), (b, b_start, b_end) = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted([a, b]) == [0, 1]
    assert a_start < b_end and b_start < a_end  # they ran at the same time
