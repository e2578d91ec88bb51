"""The driver's round reporters without Spark: progress bar and history plot."""
import io

import pandas as pd
import pytest

from sparknet_ml.driver.reporting import ProgressBar, active_mlflow, plot_history
from sparknet_ml.driver.rounds import RoundStats


class Terminal(io.StringIO):
    def isatty(self):
        return True


def stats(n, validated=()):
    return [RoundStats(r, 2.0 / r, 1280, 0.5, 2560.0,
                       0.5 + r / 100 if r in validated else None, 0.6 * r)
            for r in range(1, n + 1)]


@pytest.mark.parametrize("terminal, enabled, shown", [
    (True, True, True), (False, True, False), (True, False, False)])
def test_progress_bar_shows_rounds_loss_and_speed_only_on_a_terminal(
        monkeypatch, terminal, enabled, shown):
    stream = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    history = stats(3, validated={3})
    with ProgressBar(3, enabled=enabled).active() as bar:
        for done in range(1, 4):
            bar(done, None, history[:done])
    text = stream.getvalue()
    assert bool(text) == shown
    if shown:
        final = text.split("\r")[-1]
        assert "3/3" in final and "loss=0.6667" in final and "samples/s=2560" in final
        assert "val_acc=0.5300" in final


def test_progress_bar_resumed_starts_at_the_rounds_done(monkeypatch):
    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    with ProgressBar(5, start=3).active() as bar:
        bar(4, None, stats(4))
    assert "4/5" in stream.getvalue().split("\r")[-1]


def test_plot_history_writes_a_png_of_loss_and_validation_accuracy(tmp_path):
    from matplotlib.image import imread
    path = tmp_path / "history.png"
    plot_history(pd.DataFrame([s.__dict__ for s in stats(10, validated={5, 10})]), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(path).shape[:2] == (400, 1000)  # 10 x 4 inches at 100 dpi


def test_plot_history_refuses_an_empty_history(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        plot_history(pd.DataFrame(), str(tmp_path / "x.png"))


def test_no_mlflow_run_without_mlflow_imported(monkeypatch):
    monkeypatch.delitem(__import__("sys").modules, "mlflow", raising=False)
    assert active_mlflow() is None
