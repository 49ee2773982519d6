"""semisup: train and compare semi-supervised representation learning methods."""

__version__ = "0.1.0"
