"""Worker side of sparknet_ml: pycaffe solvers and nets in memory. No Spark imports."""
