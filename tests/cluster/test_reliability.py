"""Exact recovery: injected task failures, a killed executor JVM, a straggler with speculation
on, and a killed driver resumed from its checkpoint all end in bit-identical weights.

Each fit runs reliability_job.py in its own process (one SparkContext per process)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("caffe")

JOB = os.path.join(os.path.dirname(__file__), "reliability_job.py")
ROUNDS_DONE = 6  # reliability_job.py's fit


def run_job(*args, timeout=600):
    done = subprocess.run([sys.executable, JOB, *args], capture_output=True, text=True,
                          timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def digest_of(*args):
    code, out, err = run_job(*args)
    assert code == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["rounds"] == ROUNDS_DONE
    return result["digest"], err


@pytest.fixture(scope="module")
def baseline():
    return digest_of("local[2,4]")[0]


def test_injected_task_failures_are_retried_to_the_same_weights(baseline):
    raised, _ = digest_of("local[2,4]", "--fail-rounds", "2,5")
    aborted, _ = digest_of("local[2,4]", "--fail-rounds", "3",
                           "--fail-mode", "exit")
    assert raised == baseline and aborted == baseline


def test_failures_in_barrier_jobs_rerun_the_job_to_the_same_weights(baseline):
    # Spark does not retry a barrier result stage: the driver runs the job again.
    digest, err = digest_of("local[2,4]", "--rounds-per-job", "3",
                            "--fail-rounds", "2,5",
                            "--fail-mode", "exit")
    assert "SparkNet rounds 1-3 failed (attempt 1 of 4)" in err
    assert "SparkNet rounds 4-6 failed (attempt 1 of 4)" in err
    assert digest == baseline


def test_a_task_failing_past_max_failures_fails_the_fit_with_its_cause():
    code, _, err = run_job("local[2]", "--fail-rounds", "2")
    assert code != 0
    assert "injected failure in round 2, partition 0" in err


@pytest.mark.parametrize("conf", [["--conf", "spark.python.worker.faulthandler.enabled=true"],
                                  []], ids=["faulthandler-set", "default"])
def test_a_caffe_abort_reaches_the_driver_with_glogs_message(conf):
    """With the default settings too (hardening round 2, item 3): sparknet_ml turns on
    Spark's crash reports for Python workers unless the user set them."""
    code, _, err = run_job("local[2]", "--fail-rounds", "2", "--fail-mode", "abort", *conf)
    assert code != 0
    assert "Python worker exited unexpectedly (crashed)" in err
    assert "Check failed: shape[i] >= 0 (-1 vs. 0)" in err


def test_killed_executor_jvm_changes_nothing(baseline):
    digest, err = digest_of("local-cluster[2,1,1024]", "--kill-executor-after", "2")
    assert "killed executor pid" in err
    assert digest == baseline


def test_straggler_with_speculation_enabled_changes_nothing(baseline):
    # a job per round: Spark does not speculate barrier stages (the default's jobs)
    digest, err = digest_of("local-cluster[3,1,1024]", "--rounds-per-job", "1",
                            "--fail-rounds", "2",
                            "--fail-mode", "slow",
                            "--slow-seconds", "3",
                            "--conf", "spark.speculation=true",
                            "--conf", "spark.speculation.interval=100ms",
                            "--conf", "spark.speculation.quantile=0.5",
                            "--conf", "spark.speculation.efficiency.enabled=false")
    assert "round 2/6" in err
    assert digest == baseline


def checkpoints_in(folder) -> list[str]:
    """The complete checkpoints' folder names in ``folder`` (a local path)."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(n for n in names if n.startswith("round-")
                  and os.path.exists(os.path.join(folder, n, "checkpoint.json")))


def kill_driver_after_checkpoint(args, folder, round_number):
    """Run reliability_job.py with ``args``, SIGKILL it (driver and JVM) once ``folder`` holds
    the checkpoint after ``round_number``; returns the latest checkpoint's round then."""
    first = subprocess.Popen([sys.executable, JOB, *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    mark = f"round-{round_number:06d}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(n >= mark for n in checkpoints_in(folder)):
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its JVM, mid-fit
    first.wait()
    stopped_at = checkpoints_in(folder)[-1]
    assert mark <= stopped_at < f"round-{ROUNDS_DONE:06d}"
    return int(stopped_at[-6:])


def test_driver_killed_mid_fit_resumes_from_its_checkpoint(baseline, tmp_path):
    checkpoints = str(tmp_path / "ck")
    stopped_at = kill_driver_after_checkpoint(["local[2]", "--checkpoint", checkpoints],
                                              checkpoints, 3)
    digest, err = digest_of("local[2]", "--checkpoint", checkpoints)
    assert f"resuming from the checkpoint after round {stopped_at}" in err
    assert digest == baseline


def test_driver_killed_mid_fit_resumes_from_a_remote_checkpoint_dir(baseline, sftp):
    """Cluster-storage issue: the same with checkpointDir on a non-local file system (sshd on
    127.0.0.1 through Hadoop's SFTPFileSystem)."""
    from .. import sftp_server
    conf = sftp_server.conf_arguments(sftp.key)
    args = ["local[2]", "--checkpoint", sftp.url("checkpoints"), *conf]
    stopped_at = kill_driver_after_checkpoint(args, sftp.local("checkpoints"), 3)
    digest, err = digest_of(*args)
    assert f"resuming from the checkpoint after round {stopped_at}" in err
    assert digest == baseline
