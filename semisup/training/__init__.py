"""One run's training: preflight, few-labels rule, trainer, optimizer, strategies, checkpoints, monitor."""
