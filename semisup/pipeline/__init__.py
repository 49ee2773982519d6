"""DVC tooling: each stage's import closure and code digest, dvc.yaml's code deps and artifacts."""
