"""Runnable applications (``python -m sparknet_ml.apps.<name>``)."""
