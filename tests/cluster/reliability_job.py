"""A small deterministic SparkNet fit, run in its own process by test_reliability.py.

    python reliability_job.py MASTER [--conf k=v ...] [--checkpoint DIR] [--kill-executor-after R]
                                     [--rounds-per-job K] [--fail-rounds 2,5 [--fail-mode MODE]
                                     [--slow-seconds S]]

Prints one JSON line: {"digest": sha256 of the final weights, "rounds": n}. With
--kill-executor-after R, one executor JVM is killed (SIGKILL) as round R finishes. With
--fail-rounds, partition 0 fails the first time it runs each of those rounds, as --fail-mode
says (raise, exit, abort, slow; see fault_daemon.py, which Spark's Python workers then fork from).
"""
import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["PYSPARK_PYTHON"] = sys.executable

from pyspark.sql import SparkSession  # noqa: E402

from sparknet_ml import SparkNetEstimator, zoo  # noqa: E402
from sparknet_ml.apps import rounds_per_job  # noqa: E402
from sparknet_ml.apps.fashion_mnist import fashion_mnist_df  # noqa: E402

ROUNDS = 6


class KillExecutorAfter(logging.Handler):
    """Kills one executor JVM when the driver logs the end of a given round."""

    def __init__(self, round_number: int):
        super().__init__()
        self.marker = f"round {round_number}/{ROUNDS} "

    def emit(self, record):
        if self.marker in record.getMessage() and not getattr(self, "done", False):
            self.done = True
            ps = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True)
            pids = [int(line.split()[0]) for line in ps.stdout.splitlines()
                    if "CoarseGrainedExecutorBackend" in line]
            os.kill(pids[0], signal.SIGKILL)
            print(f"killed executor pid {pids[0]} after round", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("master")
    parser.add_argument("--conf", action="append", default=[])
    parser.add_argument("--checkpoint")
    parser.add_argument("--kill-executor-after", type=int)
    parser.add_argument("--rounds-per-job", type=rounds_per_job, default="auto")
    parser.add_argument("--fail-rounds", type=lambda text: [int(r) for r in text.split(",")])
    parser.add_argument("--fail-mode", choices=["raise", "exit", "abort", "slow"],
                        default="raise")
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    args = parser.parse_args()
    builder = (SparkSession.builder.master(args.master).config("spark.ui.enabled", "false")
               .config("spark.driver.host", "127.0.0.1").config("spark.default.parallelism", "2")
               .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable))
    marks = tempfile.TemporaryDirectory()
    if args.fail_rounds:
        faults = {"rounds": args.fail_rounds, "mode": args.fail_mode,
                  "slow_seconds": args.slow_seconds, "marks": marks.name}
        builder = (builder.config("spark.python.daemon.module", "fault_daemon")
                   .config("spark.executorEnv.PYTHONPATH", os.path.dirname(__file__))
                   .config("spark.executorEnv.SPARKNET_TEST_FAULTS", json.dumps(faults)))
    for item in args.conf:
        key, value = item.split("=", 1)
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("OFF")
    logger = logging.getLogger("sparknet_ml")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler(sys.stderr))
    if args.kill_executor_after:
        logger.addHandler(KillExecutorAfter(args.kill_executor_after))
    train = fashion_mnist_df(spark, "train").limit(2000).repartition(2)
    est = SparkNetEstimator(netPrototxt=zoo.prototxt("lenet_train_test"),
                            solverPrototxt=zoo.prototxt("lenet_solver"), inputShape=[1, 28, 28],
                            syncInterval=5, maxIter=ROUNDS, seed=11, numWorkers=2,
                            checkpointDir=args.checkpoint, checkpointInterval=1,
                            roundsPerJob=args.rounds_per_job)
    model = est.fit(train)
    digest = hashlib.sha256()
    for name, blobs in model.weights.items():
        for blob in blobs:
            digest.update(name.encode() + blob.tobytes())
    print(json.dumps({"digest": digest.hexdigest(), "rounds": len(model.history)}))
    spark.stop()


if __name__ == "__main__":
    main()
