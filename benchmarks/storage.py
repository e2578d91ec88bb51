"""Storage: seconds to save and to load a SparkNetModel on a non-local Hadoop file system (sshd
on 127.0.0.1 through Hadoop's SFTPFileSystem, as in the tests) vs a local folder, in one
process; medians of interleaved passes. The model is one InnerProduct layer whose weights make
a caffemodel of the given size; Python writing and reading the same caffemodel bytes locally is
the floor.

    python benchmarks/storage.py [--quick] [--mb 64] [--out FILE]
"""
import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

from _machine import interleaved, write
from _spark import session, table


def big_model(megabytes: int):
    """A SparkNetModel with ``megabytes`` MB of float32 weights in one InnerProduct layer."""
    from sparknet_ml import SparkNetModel
    outputs = 10
    inputs = megabytes * 2 ** 20 // 4 // outputs
    deploy = (f'name: "big" layer {{ name: "data" type: "Input" top: "data" input_param {{ '
              f'shape {{ dim: 1 dim: {inputs} }} }} }} layer {{ name: "ip" type: "InnerProduct" '
              f'bottom: "data" top: "ip" inner_product_param {{ num_output: {outputs} }} }}')
    weights = {"ip": [np.random.default_rng(0).random((outputs, inputs), np.float32),
                      np.zeros(outputs, np.float32)]}
    return SparkNetModel._create(weights=weights, deploy_text=deploy, output_blob="ip",
                                 classification=True, data_top="data", history=[],
                                 scale=1.0, mean=[], input_shape=[inputs])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 MB, 1 pass")
    parser.add_argument("--mb", type=int, default=64, help="caffemodel size (default 64 MB)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "storage.json"))
    args = parser.parse_args()
    from tests import sftp_server
    if not sftp_server.available():
        print("sshd is not installed (make setup installs openssh-server)", file=sys.stderr)
        return 2
    megabytes, repeat = (8, 1) if args.quick else (args.mb, 3)
    folder = tempfile.mkdtemp(prefix="sparknet-bench-storage-")
    server = None
    try:
        key = sftp_server.client_key(folder)
        server = sftp_server.SftpServer(os.path.join(folder, "server"), key)
        session("local[2]", conf=sftp_server.spark_conf(key))
        from sparknet_ml import SparkNetModel
        from sparknet_ml.persistence.caffemodel import caffemodel_bytes, parse_caffemodel
        from sparknet_ml.net import parse_net
        model = big_model(megabytes)
        data = caffemodel_bytes(parse_net(model._meta["deploy_text"]), model._weights)
        places = {"local": os.path.join(folder, "local-model"), "sftp": server.url("model")}
        raw_path = os.path.join(folder, "raw.caffemodel")

        def raw_write():
            with open(raw_path, "wb") as f:
                f.write(data)

        def raw_read():
            with open(raw_path, "rb") as f:
                parse_caffemodel(f.read())

        def save(where):
            return lambda: model.write().overwrite().save(places[where])

        def load(where):
            return lambda: SparkNetModel.load(places[where])

        fns = [raw_write, raw_read, save("local"), load("local"), save("sftp"), load("sftp")]
        seconds = dict(zip(["raw_write", "raw_read", "local_save", "local_load", "sftp_save",
                            "sftp_load"], interleaved(fns, repeat)))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    rows = [{"step": step, "raw_python_s": round(seconds[f"raw_{io}"], 2),
             "local_s": round(seconds[f"local_{step}"], 2),
             "sftp_s": round(seconds[f"sftp_{step}"], 2),
             "sftp_vs_local": round(seconds[f"local_{step}"] / seconds[f"sftp_{step}"], 2),
             "sftp_MB_per_s": round(len(data) / 2 ** 20 / seconds[f"sftp_{step}"], 1)}
            for step, io in (("save", "write"), ("load", "read"))]
    print(f"caffemodel {len(data) / 2 ** 20:.1f} MB, medians of {repeat} interleaved passes")
    print(table(rows, list(rows[0])))
    write({"caffemodel_mb": round(len(data) / 2 ** 20, 1), "passes": repeat, "rows": rows},
          args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
