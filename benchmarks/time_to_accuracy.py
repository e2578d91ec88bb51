"""Time to accuracy vs Spark MLlib on Fashion-MNIST, same session, same cores (local[2]):
MultilayerPerceptronClassifier (layers [784, 128, 10], L-BFGS, maxIter 200) against our LeNet
(Caffe's stock lenet_train_test.prototxt, 2 workers, τ = 50, batch 64, one Spark job per
scoring interval: roundsPerJob = 5), scored on the 10,000
test images. Ours is scored every few rounds (validationCol on the test rows); its time axis
is the time before round 1 plus the rounds' own time, without the scoring passes.

Optional baseline when torch is installed (``pip install -e .[bench]``): the same LeNet and
solver in PyTorch (_torch_lenet.py) trained with TorchDistributor on the same DataFrame's rows
(collected to the driver), 2 processes in a Spark barrier stage, DistributedDataParallel over
gloo (an allreduce every step), batch 64 each, 1 thread each, by default for as many samples
as our rounds. It is scored after as many samples as ours; its time axis is the collect, the
launch, then training without the scoring passes.

Ratios: ``time_to_mlp_accuracy_ratio`` = our time to reach the MLP's final test accuracy ÷ the
MLP's fit time (goal ≤ 0.5); our final test accuracy (goal ≥ 0.905);
``torch_distributor.time_to_mlp_accuracy_ratio``, the same for the PyTorch baseline (no goal).
Also writes the plot docs/time-to-accuracy.png.

    python benchmarks/time_to_accuracy.py [--quick] [--torch-epochs N] [--out FILE] [--plot PNG]
"""
import argparse
import importlib.util
import os
import sys
import time

from _machine import write
from _spark import accuracy_timeline, first_reaching, session, table, with_test_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pixel_vectors(spark, split: str, rows: int | None):
    """Fashion-MNIST as (features: Vector of [0, 1] pixels, label), cached: MLlib's input."""
    import numpy as np
    import pyarrow as pa
    from pyspark.ml.functions import array_to_vector
    from sparknet_ml.data import fashion_mnist
    images, labels = fashion_mnist.load(split)
    images, labels = images[:rows], labels[:rows]
    values = pa.array(images.reshape(-1).astype(np.float64) / 255)
    pixels = pa.FixedSizeListArray.from_arrays(values, 784).cast(pa.list_(pa.float64()))
    df = spark.createDataFrame(pa.table({"pixels": pixels,
                                         "label": pa.array(labels.astype(np.float64))}))
    df = df.select(array_to_vector("pixels").alias("features"), "label").repartition(2).cache()
    df.count()
    return df


def mlp(spark, rows: int | None, iterations: int) -> dict:
    """Fit MLlib's MLP; its fit time and test accuracy."""
    from pyspark.ml.classification import MultilayerPerceptronClassifier
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    train, test = pixel_vectors(spark, "train", rows), pixel_vectors(spark, "test", None)
    started = time.perf_counter()
    model = MultilayerPerceptronClassifier(layers=[784, 128, 10], maxIter=iterations,
                                           seed=0).fit(train)
    seconds = time.perf_counter() - started
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
        model.transform(test))
    train.unpersist(), test.unpersist()
    return {"fit_seconds": round(seconds, 1), "accuracy": round(accuracy, 4),
            "iterations": iterations}


def sparknet(data, rounds: int, tau: int, every: int, rounds_per_job: int) -> dict:
    """Fit our LeNet on ``data`` (:func:`with_test_rows`), scoring the test rows every
    ``every`` rounds; its accuracy timeline."""
    from sparknet_ml import SparkNetEstimator, zoo
    est = SparkNetEstimator(netPrototxt=zoo.prototxt("lenet_train_test"),
                            solverPrototxt=zoo.prototxt("lenet_solver"), inputShape=[1, 28, 28],
                            batchSize=64, syncInterval=tau, maxIter=rounds, numWorkers=2,
                            seed=0, validationCol="held_out", validationInterval=every,
                            roundsPerJob=rounds_per_job, showProgress=False)
    started = time.perf_counter()
    model = est.fit(data)
    seconds = time.perf_counter() - started
    timeline = accuracy_timeline(model.history, seconds)
    return {"fit_seconds_with_scoring": round(seconds, 1), "rounds": rounds, "tau": tau,
            "accuracy": timeline[-1]["accuracy"], "train_seconds": timeline[-1]["seconds"],
            "timeline": timeline}


def collected(data, held_out: bool):
    """``data``'s training (or held-out) rows on the driver: uint8 images (n, 784), labels."""
    import numpy as np
    import pyarrow as pa
    rows = data.filter(data.held_out if held_out else ~data.held_out).toArrow()
    pixels = rows.column("features").combine_chunks().cast(pa.binary(784))
    images = np.frombuffer(pixels.buffers()[1], np.uint8, len(pixels) * 784, pixels.offset * 784)
    return images.reshape(-1, 784), rows.column("label").to_numpy().astype(np.uint8)


def torch_distributor(data, epochs: int, score_every: int) -> dict:
    """Train the same LeNet in PyTorch (:mod:`_torch_lenet`) on ``data``'s rows, collected to
    the driver and passed to TorchDistributor's train function, scoring the test rows every
    ``score_every`` steps; its accuracy timeline. 2 processes in a Spark barrier stage
    (``local_mode=False``: Spark tasks, like our workers), DDP over gloo, batch 64 each. Its
    time axis starts with the collect (ours starts with caching its blocks), then
    TorchDistributor's launch, then training without the scoring passes."""
    from pyspark import cloudpickle
    from pyspark.ml.torch.distributor import TorchDistributor
    import _torch_lenet
    cloudpickle.register_pickle_by_value(_torch_lenet)  # its processes cannot import it
    started = time.perf_counter()
    arrays = (*collected(data, False), *collected(data, True))
    handoff = time.perf_counter() - started
    out = TorchDistributor(num_processes=2, local_mode=False, use_gpu=False).run(
        _torch_lenet.train, *arrays, epochs, score_every)
    seconds = time.perf_counter() - started
    setup = seconds - out["wall_seconds"]
    timeline = [{**p, "seconds": round(p["seconds"] + setup, 2)} for p in out["timeline"]]
    return {"fit_seconds_with_scoring": round(seconds, 1), "handoff_seconds": round(handoff, 1),
            "launch_seconds": round(setup - handoff, 1), "epochs": epochs, "steps": out["steps"],
            "accuracy": timeline[-1]["accuracy"], "train_seconds": timeline[-1]["seconds"],
            "timeline": timeline,
            "parameters": {"torch": _torch_lenet.torch.__version__, "num_processes": 2,
                           "local_mode": False, "backend": "gloo", "threads_per_process": 1,
                           "batch_per_process": 64, "scored_every_steps": score_every,
                           "data": "collected to the driver, passed as train arguments"}}


def plot(result: dict, path: str) -> None:
    from matplotlib.figure import Figure
    ours, theirs = result["sparknet"], result["mlp"]
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    axes.plot([p["seconds"] for p in ours["timeline"]],
              [p["accuracy"] for p in ours["timeline"]], "o-", markersize=3,
              label=f"sparknet_ml LeNet (2 workers, tau={ours['tau']})")
    pytorch = result["torch_distributor"]
    if "timeline" in pytorch:
        axes.plot([p["seconds"] for p in pytorch["timeline"]],
                  [p["accuracy"] for p in pytorch["timeline"]], "^-", markersize=3,
                  color="tab:green", label="PyTorch LeNet, TorchDistributor (2 processes, DDP)")
    axes.plot([theirs["fit_seconds"]], [theirs["accuracy"]], "s", color="tab:red",
              label=f"MLlib MLP [784,128,10], {theirs['iterations']} iterations")
    axes.axhline(theirs["accuracy"], color="tab:red", linestyle=":", linewidth=1)
    axes.axvline(theirs["fit_seconds"] / 2, color="gray", linestyle="--", linewidth=1,
                 label="half the MLP's fit time")
    axes.set_xlabel("training time (s), local[2]")
    axes.set_ylabel("Fashion-MNIST test accuracy")
    axes.set_ylim(0.6, 0.95)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.savefig(path, dpi=100)
    print(f"wrote {path}")


def versus(timeline: list[dict], theirs: dict) -> tuple[dict | None, float | None]:
    """The first point of ``timeline`` at the MLP's final accuracy, and its time ÷ the MLP's
    fit time."""
    reached = first_reaching(timeline, theirs["accuracy"])
    return reached, round(reached["seconds"] / theirs["fit_seconds"], 3) if reached else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows, iterations, rounds")
    parser.add_argument("--rounds", type=int, default=150, help="our rounds (default 150)")
    parser.add_argument("--score-every", type=int, default=5,
                        help="score our model every N rounds (default 5)")
    parser.add_argument("--rounds-per-job", type=int, metavar="K",
                        help="our roundsPerJob (default: the scoring interval, one Spark job "
                             "between scorings)")
    parser.add_argument("--torch-epochs", type=int, metavar="N",
                        help="TorchDistributor epochs (default: as many samples as our rounds, "
                             "16 at the defaults)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "time-to-accuracy.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "docs", "time-to-accuracy.png"))
    args = parser.parse_args()
    rows, iterations, rounds, every = ((10000, 20, 8, 2) if args.quick
                                       else (None, 200, args.rounds, args.score_every))
    tau = 50
    epochs = args.torch_epochs or max(1, round(rounds * tau * 2 * 64 / (rows or 60000)))
    spark = session("local[2]", 1, {"spark.driver.memory": "4g"})
    theirs = mlp(spark, rows, iterations)
    print(f"MLlib MLP: {theirs}", flush=True)
    data = with_test_rows(spark, rows)
    per_job = args.rounds_per_job or every
    ours = sparknet(data, rounds, tau, every, per_job)
    # a step of its 2 processes sees as many samples as an iteration of our 2 workers
    pytorch = (torch_distributor(data, epochs, every * tau) if importlib.util.find_spec("torch")
               else {"skipped": "torch not installed (pip install -e .[bench])"})
    data.unpersist()
    spark.stop()
    reached, ratio = versus(ours["timeline"], theirs)
    if "timeline" in pytorch:
        pytorch["reaches_mlp_accuracy"], pytorch["time_to_mlp_accuracy_ratio"] = versus(
            pytorch["timeline"], theirs)
    result = {"benchmark": "time_to_accuracy",
              "goal": "reach the MLP's final accuracy in <= 0.5x its fit time; final >= 0.905",
              "parameters": {"master": "local[2]", "train_rows": rows or 60000,
                             "test_rows": 10000, "mlp_iterations": iterations,
                             "rounds": rounds, "tau": tau, "batch": 64, "workers": 2,
                             "scored_every_rounds": every, "rounds_per_job": per_job},
              "mlp": theirs, "sparknet": ours,
              "sparknet_reaches_mlp_accuracy": reached, "time_to_mlp_accuracy_ratio": ratio,
              "final_accuracy": ours["accuracy"], "torch_distributor": pytorch}
    print(f"sparknet_ml LeNet: final accuracy {ours['accuracy']} after "
          f"{ours['train_seconds']} s; reaches the MLP's {theirs['accuracy']} at {reached}; "
          f"ratio {ratio}")
    summary = [{"run": "MLlib MLP", "accuracy": theirs["accuracy"],
                "seconds": theirs["fit_seconds"]},
               {"run": "sparknet_ml LeNet", "accuracy": ours["accuracy"],
                "seconds": ours["train_seconds"],
                "at MLP accuracy (s)": reached and reached["seconds"], "ratio": ratio}]
    if "timeline" in pytorch:
        at = pytorch["reaches_mlp_accuracy"]
        summary.append({"run": "TorchDistributor LeNet", "accuracy": pytorch["accuracy"],
                        "seconds": pytorch["train_seconds"], "at MLP accuracy (s)":
                        at and at["seconds"], "ratio": pytorch["time_to_mlp_accuracy_ratio"]})
    else:
        summary.append({"run": "TorchDistributor LeNet", "accuracy": pytorch["skipped"]})
    print(table(summary, ["run", "accuracy", "seconds", "at MLP accuracy (s)", "ratio"]))
    write(result, args.out)
    if not args.quick:
        plot(result, args.plot)


if __name__ == "__main__":
    sys.exit(main())
