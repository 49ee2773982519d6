"""The network: augmentation, encoder, projection head, inference (embed), a run's model folder."""
