"""The ``sparknet-ml`` command line."""
from __future__ import annotations

import argparse
import sys

from .build import command as build_command


def main(argv=None) -> int:
    """Entry point of the ``sparknet-ml`` console script."""
    parser = argparse.ArgumentParser(prog="sparknet-ml",
                                     description="SparkNet-style distributed Caffe on Spark.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build-caffe", help="build, cache and install pycaffe",
                                description="Build, cache and install pycaffe.")
    build_command.add_arguments(build)
    build.set_defaults(run=build_command.run)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
