"""Training: ``config`` (TrainConfig and its resolution), ``build`` (device, seeds, data, model, speed-ups),
``optim`` (optimizer and schedule), ``step`` (the timed optimizer step and the evaluation pass), ``resume``
(checkpoint state), ``interrupts`` (signals and the failure policy), ``distributed`` (torchrun), ``summary``
(console lines and summary.json) and ``trainer`` (the loop)."""
