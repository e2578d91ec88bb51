"""Time to accuracy vs Spark MLlib on Fashion-MNIST, same session, same cores (local[2]):
MultilayerPerceptronClassifier (layers [784, 128, 10], L-BFGS, maxIter 200) against our LeNet
(Caffe's stock lenet_train_test.prototxt, 2 workers, τ = 50, batch 64), scored on the 10,000
test images. Ours is scored every few rounds (validationCol on the test rows); its time axis
is the time before round 1 plus the rounds' own time, without the scoring passes.

Ratios: ``time_to_mlp_accuracy_ratio`` = our time to reach the MLP's final test accuracy ÷ the
MLP's fit time (goal ≤ 0.5); our final test accuracy (goal ≥ 0.905). Also writes the plot
docs/time-to-accuracy.png.

    python benchmarks/time_to_accuracy.py [--quick] [--out FILE] [--plot PNG]
"""
import argparse
import os
import sys
import time

from _machine import write
from _spark import accuracy_timeline, first_reaching, session, with_test_rows

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


def sparknet(spark, rows: int | None, rounds: int, tau: int, every: int) -> dict:
    """Fit our LeNet, scoring the test rows every ``every`` rounds; its accuracy timeline."""
    from sparknet_ml import SparkNetEstimator, zoo
    data = with_test_rows(spark, rows)
    est = SparkNetEstimator(netPrototxt=zoo.prototxt("lenet_train_test"),
                            solverPrototxt=zoo.prototxt("lenet_solver"), inputShape=[1, 28, 28],
                            batchSize=64, syncInterval=tau, maxIter=rounds, numWorkers=2,
                            seed=0, validationCol="held_out", validationInterval=every,
                            showProgress=False)
    started = time.perf_counter()
    model = est.fit(data)
    seconds = time.perf_counter() - started
    data.unpersist()
    timeline = accuracy_timeline(model.history, seconds)
    return {"fit_seconds_with_scoring": round(seconds, 1), "rounds": rounds, "tau": tau,
            "accuracy": timeline[-1]["accuracy"], "train_seconds": timeline[-1]["seconds"],
            "timeline": timeline}


def plot(result: dict, path: str) -> None:
    from matplotlib.figure import Figure
    ours, theirs = result["sparknet"], result["mlp"]
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    axes.plot([p["seconds"] for p in ours["timeline"]],
              [p["accuracy"] for p in ours["timeline"]], "o-", markersize=3,
              label=f"sparknet_ml LeNet (2 workers, tau={ours['tau']})")
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows, iterations, rounds")
    parser.add_argument("--rounds", type=int, default=150, help="our rounds (default 150)")
    parser.add_argument("--score-every", type=int, default=5,
                        help="score our model every N rounds (default 5)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                      "time-to-accuracy.json"))
    parser.add_argument("--plot", default=os.path.join(ROOT, "docs", "time-to-accuracy.png"))
    args = parser.parse_args()
    rows, iterations, rounds, every = ((10000, 20, 8, 2) if args.quick
                                       else (None, 200, args.rounds, args.score_every))
    spark = session("local[2]", 1, {"spark.driver.memory": "4g"})
    theirs = mlp(spark, rows, iterations)
    print(f"MLlib MLP: {theirs}", flush=True)
    ours = sparknet(spark, rows, rounds, 50, every)
    spark.stop()
    reached = first_reaching(ours["timeline"], theirs["accuracy"])
    result = {"benchmark": "time_to_accuracy",
              "goal": "reach the MLP's final accuracy in <= 0.5x its fit time; final >= 0.905",
              "parameters": {"master": "local[2]", "train_rows": rows or 60000,
                             "test_rows": 10000, "mlp_iterations": iterations,
                             "rounds": rounds, "tau": 50, "batch": 64, "workers": 2,
                             "scored_every_rounds": every},
              "mlp": theirs, "sparknet": ours,
              "sparknet_reaches_mlp_accuracy": reached,
              "time_to_mlp_accuracy_ratio": round(reached["seconds"] / theirs["fit_seconds"], 3)
              if reached else None,
              "final_accuracy": ours["accuracy"]}
    print(f"sparknet_ml LeNet: final accuracy {ours['accuracy']} after "
          f"{ours['train_seconds']} s; reaches the MLP's {theirs['accuracy']} at {reached}; "
          f"ratio {result['time_to_mlp_accuracy_ratio']}")
    write(result, args.out)
    if not args.quick:
        plot(result, args.plot)


if __name__ == "__main__":
    sys.exit(main())
