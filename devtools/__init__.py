"""What the tests and the benchmarks share: tiny params profiles, digits shards, git + DVC copies of the
project, a local cluster of pretrain processes. tests/ and bench/ import it; bench never imports tests/, and
neither the library nor the stages import it."""
