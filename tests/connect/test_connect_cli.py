"""``sparknet-ml train`` and ``score`` with ``--remote``: the same commands through a Spark
Connect server; --master with --remote is a usage error."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("caffe")
pytest.importorskip("grpc")

from ..spark.test_bad_input import SOLVER, TINY_NET  # noqa: E402


def cli(*args):
    return subprocess.run([sys.executable, "-m", "sparknet_ml.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_train_and_score_through_a_connect_server(connect_server, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [[float((i * 7 + j) % 5) for j in range(16)] for i in range(48)]
    pq.write_table(pa.table({"features": rows, "label": [float(i % 3) for i in range(48)]}),
                   str(tmp_path / "data.parquet"))
    (tmp_path / "net.prototxt").write_text(TINY_NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    remote = ("--remote", connect_server.url())
    done = cli("train", "--net", str(tmp_path / "net.prototxt"),
               "--solver", str(tmp_path / "solver.prototxt"), "--data",
               str(tmp_path / "data.parquet"), "--out", str(tmp_path / "model"),
               "--input-shape", "1,4,4", "--rounds", "2", "--sync-interval", "2", "--batch", "8",
               *remote)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "model")) == ["metadata", "model"]
    done = cli("score", "--model", str(tmp_path / "model"), "--data",
               str(tmp_path / "data.parquet"), "--out", str(tmp_path / "scored.parquet"),
               *remote)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scored 48 rows" in done.stdout
    assert pq.read_table(str(tmp_path / "scored.parquet")).num_rows == 48


def test_master_and_remote_together_are_a_usage_error():
    done = cli("score", "--model", "m", "--data", "d", "--out", "o", "--master", "local[2]",
               "--remote", "sc://localhost:1")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr
