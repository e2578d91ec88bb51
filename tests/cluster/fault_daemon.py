"""Spark's Python daemon with injected task faults, for the reliability tests.

reliability_job.py installs it with ``spark.python.daemon.module=fault_daemon`` (this folder on
the workers' ``PYTHONPATH``) and the faults as JSON in ``spark.executorEnv.SPARKNET_TEST_FAULTS``:
``{"rounds": [2, 5], "mode": "raise" | "exit" | "abort" | "slow", "slow_seconds": 5,
"marks": DIR}``. Every Python worker forks from this daemon after it wrapped the rounds' call of
``train_round``: partition 0 fails (or stalls) the first time it runs each listed round
(1-based), whether in a round's job or inside a barrier job; a file in ``marks`` records that
it did, so Spark's retry, a speculative copy or the driver's rerun of a barrier job runs it
normally. Production code holds no switch for this.
"""
import json
import os
import time

from pyspark import daemon

import sparknet_ml.tasks.rounds as rounds

# A 3x3 input under a 5x5 kernel: Caffe's shape CHECK fails while building the net.
ABORTING_NET = """layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 1 dim: 3 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 1 kernel_size: 5 } }"""


def first_time(marks: str, round_number: int) -> bool:
    """Whether this is the first run of ``round_number`` in partition 0 (and mark it run)."""
    try:
        os.close(os.open(os.path.join(marks, f"round-{round_number}"),
                         os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def fail(faults: dict, round_number: int) -> None:
    """The fault of ``faults["mode"]``, in this task."""
    mode = faults.get("mode", "raise")
    if mode == "exit":
        os._exit(134)
    if mode == "abort":
        from sparknet_ml.engine.solver import make_solver
        make_solver(ABORTING_NET, "base_lr: 0.01", 1)  # Caffe CHECK-fails: SIGABRT
    if mode == "slow":
        time.sleep(faults.get("slow_seconds", 5))
        return
    raise RuntimeError(f"sparknet_ml test: injected failure in round {round_number}, "
                       "partition 0")


def install(faults: dict) -> None:
    """Wrap the rounds' ``train_round`` so that it injects ``faults``."""
    train_round = rounds.train_round

    def faulty(spec, features, labels, state, round_index, tau, seed, partition, **options):
        number = round_index + 1
        if partition == 0 and number in faults["rounds"] and first_time(faults["marks"],
                                                                          number):
            fail(faults, number)
        return train_round(spec, features, labels, state, round_index, tau, seed, partition,
                           **options)
    rounds.train_round = faulty


if __name__ == "__main__":
    install(json.loads(os.environ["SPARKNET_TEST_FAULTS"]))
    daemon.manager()
