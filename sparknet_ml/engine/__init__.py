"""Worker side of sparknet_ml: pycaffe solvers and nets in memory. No Spark imports."""
import os

# glog reads this when Caffe first logs: keep Caffe's INFO chatter (a solver's whole
# parameter dump per solver) out of users' logs unless they ask for it.
os.environ.setdefault("GLOG_minloglevel", "2")
