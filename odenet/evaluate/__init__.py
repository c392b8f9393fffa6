"""The test-time sweep of a checkpoint (``eval.py``): ``sweep`` plans and runs it, ``probes`` measure it."""
