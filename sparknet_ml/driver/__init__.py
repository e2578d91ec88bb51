"""The driver side: planning a fit, the run loop of rounds, checkpoints, reporting, the state
server, and the questions only a SparkSession answers (:mod:`.session`). Nothing here runs in
an executor; what Spark ships to executors lives in :mod:`sparknet_ml.tasks`."""
