"""The sparknet-ml command line, run as a user would (its own process, its own Spark)."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("caffe")

from sparknet_ml import zoo  # noqa: E402

from .test_estimator import fashion_df  # noqa: E402


def cli(*args):
    return subprocess.run([sys.executable, "-m", "sparknet_ml.cli", *args], capture_output=True,
                          text=True, timeout=600)


def error_line(done) -> str:
    """The one error line of a failed command: the last line of stderr (Spark's own start-up
    lines may come before it), and no traceback."""
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("sparknet-ml: error: ")]
    assert done.returncode == 2 and errors == lines[-1:], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return errors[0]


def test_info_reports_the_caffe_build_and_versions():
    done = cli("info")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["caffe_build"]["cuda"] is False and "pycaffe-solver-state" in \
        report["caffe_build"]["patches"]
    assert report["pyspark"] == "4.3.0" and report["sparknet_ml"]


def test_train_then_score_parquet(spark, tmp_path):
    data = str(tmp_path / "train.parquet")
    fashion_df(spark, "train", 600).write.parquet(data)
    (tmp_path / "net.prototxt").write_text(zoo.prototxt("lenet_train"))
    (tmp_path / "solver.prototxt").write_text(zoo.prototxt("lenet_solver"))
    model = str(tmp_path / "model")
    done = cli("train", "--net", str(tmp_path / "net.prototxt"),
               "--solver", str(tmp_path / "solver.prototxt"), "--data", data, "--out", model,
               "--rounds", "2", "--sync-interval", "5", "--workers", "2",
               "--rounds-per-job", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 2 rounds" in done.stdout and os.path.isdir(os.path.join(model, "model"))
    scored = str(tmp_path / "scored.parquet")
    done = cli("score", "--model", model, "--data", data, "--out", scored)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "scored 600 rows" in done.stdout
    columns = spark.read.parquet(scored).columns
    assert {"features", "label", "rawPrediction", "probability", "prediction"} <= set(columns)
    # Hardening round 2, item 1, variants: our own outputs are replaced only when asked.
    done = cli("score", "--model", model, "--data", data, "--out", scored)
    assert error_line(done) == (f"sparknet-ml: error: --out {scored} already exists; use "
                                "--overwrite to replace it")
    done = cli("score", "--model", model, "--data", data, "--out", scored, "--overwrite")
    assert done.returncode == 0, done.stderr[-2000:]
    assert [n for n in os.listdir(tmp_path) if ".staged-" in n or ".replaced-" in n] == []
    done = cli("train", "--net", str(tmp_path / "net.prototxt"), "--solver",
               str(tmp_path / "solver.prototxt"), "--data", data, "--out", model,
               "--rounds", "1", "--sync-interval", "2", "--overwrite")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 1 rounds" in done.stdout


@pytest.mark.parametrize("command", ["train", "score"])
def test_out_never_replaces_a_folder_of_the_users(command, tmp_path):
    """Hardening round 2, item 1: ``--out DIR`` naming the user's pictures deleted them (train)
    or replaced them with parquet (score), exit 0. Refused, with or without --overwrite, before
    any training or scoring."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "holiday.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "net.prototxt").write_text(zoo.prototxt("lenet_train"))
    (tmp_path / "solver.prototxt").write_text(zoo.prototxt("lenet_solver"))
    inputs = ["--net", str(tmp_path / "net.prototxt"), "--solver",
              str(tmp_path / "solver.prototxt"), "--data", "fashion-mnist"]
    if command == "score":  # the model is checked first: make a folder look like one
        (tmp_path / "metadata").mkdir()
        inputs = ["--model", str(tmp_path), "--data", "fashion-mnist-test"]
    done = cli(command, *inputs, "--out", str(pictures))
    assert error_line(done) == (f"sparknet-ml: error: --out {pictures} already exists; use "
                                "--overwrite to replace it")
    done = cli(command, *inputs, "--out", str(pictures), "--overwrite")
    assert f"--out {pictures} exists and is not a " in error_line(done)
    assert "refusing to replace it, even with --overwrite" in error_line(done)
    assert os.listdir(pictures) == ["holiday.jpg"]


def test_errors_are_one_line_and_exit_code_2(tmp_path):
    done = cli("train", "--net", str(tmp_path / "missing.prototxt"), "--solver", "x",
               "--data", "fashion-mnist", "--out", str(tmp_path / "m"))
    assert error_line(done) == f"sparknet-ml: error: --net {tmp_path}/missing.prototxt: no such file"
    done = cli("score", "--model", str(tmp_path), "--data", str(tmp_path / "none.parquet"),
               "--out", str(tmp_path / "o"))
    assert error_line(done) == f"sparknet-ml: error: --model {tmp_path}: not a saved model (no metadata folder)"
    for command in ("train", "score", "info", "build-caffe", "bench"):
        assert cli(command, "--help").returncode == 0


def test_train_on_an_image_folder_with_a_plot_then_score_it(tmp_path):
    from .image_folders import write_image_folder
    folder = write_image_folder(tmp_path / "images", per_class=30)
    (tmp_path / "net.prototxt").write_text(zoo.prototxt("cifar10_quick_train"))
    (tmp_path / "solver.prototxt").write_text(zoo.prototxt("cifar10_quick_solver"))
    model, plot = str(tmp_path / "model"), str(tmp_path / "history.png")
    done = cli("train", "--net", str(tmp_path / "net.prototxt"),
               "--solver", str(tmp_path / "solver.prototxt"), "--data", folder, "--out", model,
               "--rounds", "2", "--sync-interval", "2", "--batch", "8", "--plot", plot)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "classes bag, trouser, tshirt are labels 0-2" in done.stderr
    assert "trained 2 rounds" in done.stdout
    with open(plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    done = cli("score", "--model", model, "--data", folder, "--out", str(tmp_path / "s.parquet"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "scored 90 rows" in done.stdout


def test_bench_lists_and_runs_a_benchmark_into_a_results_folder(tmp_path):
    done = cli("bench", "--list")
    assert done.returncode == 0 and "caffe_speed" in done.stdout.split()
    done = cli("bench", "caffe_speed", "--quick", "--results", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "caffe-speed.json") as f:
        rows = json.load(f)["rows"]
    assert [(r["net"], r["batch"]) for r in rows] == [
        ("lenet", 64), ("lenet", 256), ("cifar10_quick", 64), ("cifar10_quick", 256)]
    assert all(r["cpu_img_s"] > 0 for r in rows)
    done = cli("bench", "nope")
    assert done.returncode == 2 and "no benchmark nope; known: " in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--net", "caffenet", "--data", "fashion-mnist"], "--net caffenet trains on an image folder"),
    (["--net", "lenet.prototxt", "--data", "fashion-mnist"], "a net file needs --solver"),
])
def test_train_stock_imagenet_nets_and_net_files_say_what_they_need(args, message, tmp_path):
    done = cli("train", *args, "--out", str(tmp_path / "model"))
    assert message in error_line(done)


@pytest.mark.parametrize("args, message", [
    (["--master", "local[abc]"], "--master local[abc]: not a Spark master URL"),
    (["--master", "foo://bar"], "--master foo://bar: not a Spark master URL"),
    (["--out", "/proc/sparknet-model"], "--out /proc/sparknet-model: cannot write there"),
    (["--master", "spark://127.0.0.1:1"],
     "--master spark://127.0.0.1:1: no Spark master answered (127.0.0.1:1: Connection refused)"),
])
def test_bad_master_and_unwritable_out_fail_before_training(args, message, tmp_path):
    """Hardening issue, item 13: a Java trace and a misleading JAVA_GATEWAY_EXITED, or a full
    fit lost at the end."""
    (tmp_path / "net.prototxt").write_text(zoo.prototxt("lenet_train"))
    (tmp_path / "solver.prototxt").write_text(zoo.prototxt("lenet_solver"))
    base = {"--net": str(tmp_path / "net.prototxt"), "--solver": str(tmp_path / "solver.prototxt"),
            "--data": "fashion-mnist", "--out": str(tmp_path / "model")}
    base.update(zip(args[::2], args[1::2]))
    done = cli("train", *[x for pair in base.items() for x in pair])
    assert message in error_line(done)


def test_a_bad_input_shape_names_the_option(tmp_path):
    """Hardening round 2, item 10: ``--input-shape 1,x,28`` said ``invalid literal for int()``."""
    for shape in ("1,x,28", "1,0,28"):
        done = cli("train", "--net", "n", "--solver", "s", "--data", "fashion-mnist", "--out",
                   str(tmp_path / "m"), "--input-shape", shape)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert (f"sparknet-ml train: error: argument --input-shape: '{shape}' is not C,H,W: "
                "positive integers separated by commas") in done.stderr


def test_a_py4j_level_failure_is_one_line(tmp_path):
    """Hardening issue, item 13: --data x.csv (parquet's reader fails in the JVM) printed a
    238-line traceback and exit 1."""
    data = tmp_path / "x.csv"
    data.write_text("a,b\n1,2\n")
    (tmp_path / "net.prototxt").write_text(zoo.prototxt("lenet_train"))
    (tmp_path / "solver.prototxt").write_text(zoo.prototxt("lenet_solver"))
    done = cli("train", "--net", str(tmp_path / "net.prototxt"), "--solver",
               str(tmp_path / "solver.prototxt"), "--data", str(data), "--out",
               str(tmp_path / "model"))
    error_line(done)


def test_train_and_score_with_every_path_on_a_remote_file_system(spark, sftp):
    """Cluster-storage issue: --net, --solver, --data, --out and --model as sftp:// URIs."""
    from sparknet_ml import storage
    from .. import sftp_server
    from .test_bad_input import SOLVER, TINY_NET
    conf = sftp_server.conf_arguments(sftp.key)
    rows = [([float((i * 7 + j) % 5) for j in range(16)], float(i % 3)) for i in range(48)]
    spark.createDataFrame(rows, "features array<double>, label double").write.parquet(
        sftp.url("cli", "data.parquet"))
    storage.write_bytes(sftp.url("cli", "net.prototxt"), TINY_NET.encode())
    storage.write_bytes(sftp.url("cli", "solver.prototxt"), SOLVER.encode())
    done = cli("train", "--net", sftp.url("cli", "net.prototxt"),
               "--solver", sftp.url("cli", "solver.prototxt"),
               "--data", sftp.url("cli", "data.parquet"), "--out", sftp.url("cli", "model"),
               "--input-shape", "1,4,4", "--rounds", "2", "--sync-interval", "2", "--batch", "8",
               *conf)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(sftp.local("cli", "model"))) == ["metadata", "model"]
    done = cli("score", "--model", sftp.url("cli", "model"), "--data",
               sftp.url("cli", "data.parquet"), "--out", sftp.url("cli", "scored.parquet"), *conf)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scored 48 rows" in done.stdout
    assert spark.read.parquet(sftp.url("cli", "scored.parquet")).count() == 48
