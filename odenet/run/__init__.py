"""A run's files: checkpoints, metrics.jsonl and config.yaml, TensorBoard, run directories.

``files`` and ``metrics`` are torch-free (reports read run directories through them);
``checkpoint``, ``log`` and ``tensorboard`` need torch.
"""
