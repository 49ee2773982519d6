"""Scores of embeddings: kNN, the linear probe, t-SNE maps."""
