"""What every command's process shares: a quiet TensorFlow start, params, one-line errors, signals."""
