"""A CrossValidator-like sweep keeps the Python workers' memory flat (many-GPUs issue): each
fit of a baseLr sweep built a solver that every worker kept for good."""
import numpy as np
import pytest

pytest.importorskip("caffe")

from sparknet_ml import SparkNetEstimator  # noqa: E402

from .test_bad_input import TINY_NET  # noqa: E402

# ip holds 2M parameters: a solver (weights, diffs, momentum) is 24 MB of host memory.
WIDE_NET = TINY_NET.replace("dim: 1 dim: 4 dim: 4", "dim: 1 dim: 64 dim: 64").replace(
    "num_output: 3", "num_output: 512")


def worker_memory(spark) -> dict[int, tuple[int, int]]:
    """{pid: (resident kB, cached solvers)} of the Python workers an RDD job reaches (the
    rounds are RDD jobs: they run in the same pool of workers)."""

    def probe(_):
        import os
        from sparknet_ml.engine import worker
        with open("/proc/self/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
        yield os.getpid(), rss, len(worker._SOLVERS)
    found = {}
    for pid, rss, solvers in spark.sparkContext.parallelize(range(8), 8).mapPartitions(
            probe).collect():
        found[pid] = max(found.get(pid, (0, 0)), (rss, solvers))
    return found


def test_a_sweep_of_20_fits_keeps_worker_memory_flat(spark):
    rng = np.random.default_rng(0)
    rows = [(rng.random(4096).tolist(), float(i % 3)) for i in range(32)]
    df = spark.createDataFrame(rows, "features array<double>, label double").repartition(
        2).cache()
    sizes = []
    for fit in range(20):
        SparkNetEstimator(netPrototxt=WIDE_NET, inputShape=[1, 64, 64], batchSize=8,
                          solverPrototxt=f'base_lr: {0.01 + fit / 1000} lr_policy: "fixed"',
                          syncInterval=1, maxIter=1, seed=1).fit(df)
        if fit in (0, 19):
            sizes.append(worker_memory(spark))
    after_one, after_twenty = sizes
    assert all(solvers <= 2 for _, solvers in after_twenty.values()), after_twenty
    grown = [after_twenty[pid][0] - after_one[pid][0] for pid in after_twenty
             if pid in after_one]
    assert grown, (after_one, after_twenty)  # the same workers answered both times
    # Measured: +35 MB (a second solver kept); unbounded, the 19 more solvers took +489 MB.
    assert max(grown) < 60 * 1024, (after_one, after_twenty)
