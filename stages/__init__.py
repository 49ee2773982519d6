"""One click command per DVC stage: options, load params, call semisup, write outputs.

Every stage runs as `python -m stages.<name>`, which runs this first: the stages' entry switches the process
runtime on (semisup/process/runtime.py: TensorFlow's quiet start, before any stage imports TensorFlow; SIGTERM
and Ctrl-C as one line, also when a finaliser swallowed them).
"""

from semisup.process import runtime

runtime.install()
