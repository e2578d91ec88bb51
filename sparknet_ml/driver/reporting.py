"""What the driver reports about SparkNet rounds: a progress bar, MLflow runs, a plot.

Each reporter is a round callback ``callback(rounds_done, state, history)`` for
:func:`sparknet_ml.driver.rounds.run_rounds`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile


class ProgressBar:
    """A tqdm bar of rounds on stderr with loss, samples/s, validation accuracy and ETA.

    Silent when ``enabled`` is false or stderr is not a terminal.
    """

    def __init__(self, rounds: int, start: int = 0, enabled: bool = True):
        from tqdm import tqdm
        self.bar = tqdm(total=rounds, initial=start, unit="round", desc="SparkNet",
                        file=sys.stderr, disable=None if enabled else True, leave=True)

    def __call__(self, done: int, state, history) -> None:
        last = history[-1]
        postfix = {"loss": f"{last.loss:.4f}", "samples/s": f"{last.samples_per_second:.0f}"}
        if last.validation_accuracy is not None:
            postfix["val_acc"] = f"{last.validation_accuracy:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(done - self.bar.n)

    @contextlib.contextmanager
    def active(self):
        """Route the console's logging lines above the bar while it is shown; close it after."""
        try:
            if self.bar.disable:
                yield self
            else:  # imported only here: in a Jupyter kernel it warns about ipywidgets
                from tqdm.contrib.logging import logging_redirect_tqdm
                with logging_redirect_tqdm(loggers=[logging.getLogger()]):
                    yield self
        finally:
            self.bar.close()


def active_mlflow():
    """The ``mlflow`` module when a run is active, else None (a run can only be active when
    the user's code imported mlflow, so it is never imported here)."""
    mlflow = sys.modules.get("mlflow")
    return mlflow if mlflow is not None and mlflow.active_run() is not None else None


@contextlib.contextmanager
def mlflow_run(estimator):
    """A nested MLflow run for one fit, yielding its :class:`MLflowLogger`, when a run is
    active (so CrossValidator's fits each get a child run); else yields None."""
    mlflow = active_mlflow()
    if mlflow is None:
        yield None
        return
    with mlflow.start_run(nested=True, run_name=f"{type(estimator).__name__} fit"):
        yield MLflowLogger(mlflow, estimator)


class MLflowLogger:
    """Logs a fit to the active MLflow run: params, per-round metrics, the model directory."""

    #: Params logged as text artifacts instead (MLflow caps param values).
    TEXT_PARAMS = ("netPrototxt", "solverPrototxt")

    def __init__(self, mlflow, estimator):
        self.mlflow = mlflow
        params = {p.name: estimator.getOrDefault(p) for p in estimator.params
                  if estimator.isDefined(p)}
        for name in self.TEXT_PARAMS:
            if name in params:
                mlflow.log_text(params.pop(name), f"sparknet/{name}.prototxt")
        mlflow.log_params({name: json.dumps(value) if isinstance(value, list) else value
                           for name, value in params.items()})

    def __call__(self, done: int, state, history) -> None:
        last = history[-1]
        metrics = {"loss": last.loss, "samples_per_second": last.samples_per_second,
                   "round_seconds": last.seconds}
        if last.validation_accuracy is not None:
            metrics["validation_accuracy"] = last.validation_accuracy
        if last.validation_top5_accuracy is not None:
            metrics["validation_top5_accuracy"] = last.validation_top5_accuracy
        self.mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)},
                                step=done)

    def log_model(self, model) -> None:
        """Save ``model`` (Spark ML format) and log the folder as the artifact ``model``."""
        with tempfile.TemporaryDirectory(prefix="sparknet-mlflow-") as tmp:
            path = os.path.join(tmp, "model")
            model.write().save(path)
            self.mlflow.log_artifacts(path, "model")


def plot_history(history, path: str) -> None:
    """Write a PNG of training loss and validation accuracy against round and wall time.

    Parameters
    ----------
    history : pandas.DataFrame
        ``SparkNetModel.history``: columns round, loss, wall_seconds, validation_accuracy.
    path : str
        The PNG file to write.
    """
    try:  # the Figure API draws with Agg and leaves pyplot's backend alone
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plotHistory needs matplotlib: pip install 'sparknet_ml[plot]'") \
            from err
    if history.empty:
        raise ValueError("the history is empty: nothing to plot")
    figure = Figure(figsize=(10, 4), layout="constrained")
    by_round, by_time = figure.subplots(1, 2, sharey=True)
    validated = history.dropna(subset=["validation_accuracy"]) \
        if "validation_accuracy" in history else history.iloc[:0]
    for axes, x in ((by_round, "round"), (by_time, "wall_seconds")):
        axes.plot(history[x], history["loss"], color="tab:blue", label="training loss")
        axes.set_xlabel("round" if x == "round" else "wall time (s)")
        axes.grid(alpha=0.3)
        if not validated.empty:
            accuracy = axes.twinx()
            accuracy.plot(validated[x], validated["validation_accuracy"], "o-",
                          color="tab:orange", label="validation accuracy")
            accuracy.set_ylim(0, 1)
            accuracy.set_ylabel("validation accuracy")
    by_round.set_ylabel("training loss")
    by_round.legend(loc="upper left")
    figure.suptitle("SparkNet training history")
    figure.savefig(path, format="png", dpi=100)
