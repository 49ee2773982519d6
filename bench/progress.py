"""What one progress report costs a training step: semisup.core.progress.Progress per call, bar and lines.

A step at the reference recipe takes about a second on a CPU and tens of milliseconds on a GPU; the
callback gets the loss the trainer already fetched, so its whole cost is this Python time.

    python bench/progress.py [--calls 20000]

Last line: one JSON object of the figures (microseconds per call).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

from semisup.core.progress import Progress


def microseconds_per_call(tty: bool, calls: int, steps: int = 400) -> float:
    """Mean cost of Progress(step, steps, loss) over `calls` steps of `steps`-step epochs."""
    with open(os.devnull, "w") as devnull:
        stream = io.StringIO() if tty else devnull
        progress = Progress("bench", 250, stream=stream, tty=tty)
        t0 = time.perf_counter()
        for i in range(calls):
            progress(i % steps + 1, steps, 1.0)
        progress.close()
        return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    figures = {
        "lines_us_per_call": round(microseconds_per_call(False, args.calls), 2),
        "bar_us_per_call": round(microseconds_per_call(True, args.calls), 2),
    }
    print(
        f"10% lines: {figures['lines_us_per_call']:.2f} us/step   bar: {figures['bar_us_per_call']:.2f} us/step"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
