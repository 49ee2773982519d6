"""One click command per DVC stage: options, load params, call semisup, write outputs."""

# First, before any stage imports TensorFlow: keep TensorFlow's native start-up lines off the terminal.
from stages import console  # noqa: E402, F401
