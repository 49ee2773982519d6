"""One click command per DVC stage: options, load params, call semisup, write outputs."""
