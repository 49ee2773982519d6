"""What XLA's persistent compile cache saves a pretrain process (make test, make demo and make study give
their stages one; see docs/faults.md, "XLA's persistent compile cache").

One method's pretrain stage on the tests' digits data (32 pixels, 4 epochs, an 8-filter encoder), run as
a separate process --repeats times in each of three settings, in this order per repeat:
- off: no cache (what a stage does by itself);
- cold: a fresh, empty cache folder (the first process of a command: compiles, and writes the cache);
- warm: the folder `cold` just filled (every later process of the command).
Figures: each process's CPU seconds (user + sys) and wall seconds, medians over the repeats, the ratio
warm / off, and whether the three saved encoders are the same bytes (they must be: the same programs).

    python bench/compile_cache.py [--method paws] [--repeats 3]

The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pretrain(
    method: str, params: Path, shards: Path, out: Path, cache: Path | None
) -> tuple[float, float, str]:
    """One pretrain process -> (CPU seconds, wall seconds, sha256 of the saved weights)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_XLA_FLAGS"} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    if cache is not None:
        env["TF_XLA_FLAGS"] = f"--tf_xla_persistent_cache_directory={cache}"
    cmd = [sys.executable, "-m", "stages.pretrain", "--run", method, "--params", str(params)]
    cmd += ["--shards", str(shards), "--models", str(out / "m"), "--metrics", str(out / "x")]
    cmd += ["--checkpoints", str(out / "ck")]
    cpu, start = children_cpu(), time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall, cpu = time.monotonic() - start, children_cpu() - cpu
    if proc.returncode != 0:
        sys.exit(f"pretrain failed:\n{proc.stderr[-2000:]}")
    with zipfile.ZipFile(out / "m" / method / "encoder.keras") as z:
        digest = hashlib.sha256(z.read("model.weights.h5")).hexdigest()
    return cpu, wall, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="paws")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from devtools.support import RESUME_TINY as TINY  # the resume tests' tiny run: 4 epochs, 8 filters
    from devtools.support import make_shards, write_params

    with tempfile.TemporaryDirectory(prefix="bench-xla-") as tmp:
        root = Path(tmp)
        params = write_params(root / "params.yaml", TINY)
        shards = make_shards(root, params)
        runs: dict[str, list[tuple[float, float, str]]] = {"off": [], "cold": [], "warm": []}
        for r in range(args.repeats):
            cache = root / f"cache{r}"
            cache.mkdir()
            for setting, folder in (("off", None), ("cold", cache), ("warm", cache)):
                out = root / f"{setting}{r}"
                runs[setting].append(pretrain(args.method, params, shards, out, folder))
                cpu, wall, _ = runs[setting][-1]
                print(f"repeat {r + 1}: {setting:4s} {cpu:6.1f} s CPU {wall:6.1f} s wall", flush=True)
    med = {
        s: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for s, v in runs.items()
    }
    same = len({x[2] for v in runs.values() for x in v}) == 1
    for setting, (cpu, wall) in med.items():
        print(f"{setting:4s}: median {cpu:.1f} s CPU, {wall:.1f} s wall")
    ratio = med["warm"][0] / med["off"][0]
    print(f"warm / off CPU: {ratio:.2f}; saved encoders identical: {same}")
    figures = {s: {"cpu_s": round(c, 2), "wall_s": round(w, 2)} for s, (c, w) in med.items()}
    print(
        json.dumps(
            {"method": args.method, **figures, "warm_over_off_cpu": round(ratio, 3), "identical": same}
        )
    )


if __name__ == "__main__":
    main()
