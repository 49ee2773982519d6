"""The `semisup` command a person runs outside the pipeline (predict, compare, check-page, plots-template)."""
