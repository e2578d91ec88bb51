"""Caffe's data transform on the CPU against a CaffeNet iteration, in one run, no Spark.

Per example: the TRAIN transform of the stock CaffeNet (random 227x227 crop of a 3x256x256
uint8 example, random mirror, mean image at the crop's offset; ``Transform.apply`` straight
into the net's data blob, rows gathered from a memory-mapped block as a round's task does)
against one raw ``solver.step(1)`` of the stock CaffeNet on that batch, per example.
Goal (ImageNet issue): the transform at most 5% of the iteration (``transform_share``).

    python benchmarks/imagenet_transform.py [--batch 16] [--quick] [--out FILE]
"""
import argparse
import os
import sys
import tempfile

import numpy as np

from _machine import interleaved, write


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="3 passes instead of 7")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "imagenet_transform.json"))
    args = parser.parse_args(argv)
    import caffe
    from caffe.proto import caffe_pb2
    from sparknet_ml import net as netlib, zoo
    from sparknet_ml.engine.solver import make_solver
    caffe.set_mode_cpu()
    rng = np.random.default_rng(0)
    shape, batch = (3, 256, 256), args.batch
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "features.npy")
        np.save(path, rng.integers(0, 256, (4 * batch, *shape)).astype(np.uint8))
        block = np.load(path, mmap_mode="r")
        net = netlib.parse_net(zoo.prototxt("bvlc_reference_caffenet_train_val"))
        layer, param = netlib.data_transform(net, caffe_pb2.TRAIN)
        transform = netlib.resolve_transform(layer, param, shape, rng.uniform(
            0, 255, shape).astype(np.float32), "random mean")
        train = netlib.train_net(net, transform.output_shape(shape), batch)
        solver = make_solver(netlib.net_to_text(train),
                             zoo.prototxt("bvlc_reference_caffenet_solver"), batch)
        data, label = solver.net.blobs["data"], solver.net.blobs["label"]
        label.data[...] = rng.integers(0, 1000, batch)
        draws = np.random.default_rng(1)

        def transform_batch():
            rows = draws.integers(0, len(block), batch)
            offsets, flips = transform.draw(draws, batch, shape)
            transform.apply(block, rows, offsets, flips, out=data.data)

        transform_batch()
        transform_s, step_s = interleaved([transform_batch, lambda: solver.step(1)],
                                          3 if args.quick else 7)
    result = {"batch": batch, "transform_us_per_example": transform_s / batch * 1e6,
              "iteration_us_per_example": step_s / batch * 1e6,
              "transform_share": transform_s / step_s}
    print(f"CaffeNet, batch {batch}, CPU: transform {result['transform_us_per_example']:.0f} "
          f"us/example, iteration {result['iteration_us_per_example']:.0f} us/example, "
          f"transform_share {result['transform_share']:.4f} (goal <= 0.05)")
    write(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
