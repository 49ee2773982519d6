"""`make demo` and `make study`: the pipeline run as DVC experiments beside the workspace (not stages).

profiles.py holds their -S profiles, dvcexp.py the one small wrapper around DVC they drive experiments
through (DVC's JSON, not its tables), progress.py the study's progress line. Exit status, for both:
2 for a problem with the input or the environment (one line saying what to do), 1 when an experiment
failed, 130 when interrupted (Ctrl-C).
"""
