"""Image data: sources (stl10, digits, folder) -> TFRecord shards + manifest -> tf.data readers.

The readers (`semisup.data.readers`) are what training and evaluation use; `sources`, `shards` and the
per-source modules serve the download and shard stages.
"""
