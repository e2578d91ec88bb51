"""DataFrame column <-> tensor batches, and the datasets the project trains on."""
