"""Progress of long loops (training epochs, embedding large splits) that costs nothing per step.

`Progress` is an `on_step(step, steps, loss)` callback: the trainer calls it after every step with the loss
it already fetched, so it adds no host sync. On a terminal it draws a live tqdm bar per epoch (step/steps,
loss, images/s, time left); elsewhere (DVC's logs, CI) it prints one line every 10% of an epoch or every
60 s, whichever comes first, but lines no closer than 5 s (SEMISUP_PROGRESS_MIN_SECONDS): an epoch of a
second (the digits demo's) leaves only its own end-of-epoch line in a log, not ten more.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

from tqdm import tqdm

T = TypeVar("T")
MIN_SECONDS = float(os.environ.get("SEMISUP_PROGRESS_MIN_SECONDS", "5"))


def duration(seconds: float) -> str:
    """Seconds as `42s`, `3m05s` or `1h02m`."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """on_step(step, steps, loss) -> a bar per epoch on a terminal, else a line every 10% / 60 s.

    `step` counts from 1 to `steps`; a step not after the previous one starts a new epoch. Images/s and
    time left are measured from the end of each epoch's first step, which includes tracing.
    """

    def __init__(
        self,
        label: str,
        images_per_step: int,
        *,
        unit: str = "step",
        stream: IO[str] | None = None,
        tty: bool | None = None,
        fraction: float = 0.1,
        seconds: float = 60.0,
        min_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label, self.images_per_step, self.unit = label, images_per_step, unit
        self._stream = stream
        self._tty = tty
        self.fraction, self.seconds, self._clock = fraction, seconds, clock
        self.min_seconds = MIN_SECONDS if min_seconds is None else min_seconds
        self._bar: tqdm | None = None
        self._last_step = 0
        self._next_mark = 0
        self._first: tuple[int, float] | None = None  # (step, time) at the end of the epoch's first step
        self._printed_at = 0.0

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def tty(self) -> bool:
        if self._tty is None:
            isatty = getattr(self.stream, "isatty", None)
            self._tty = bool(isatty and isatty())
        return self._tty

    def __call__(self, step: int, steps: int, loss: float | None = None) -> None:
        now = self._clock()
        if step <= self._last_step or self._first is None:
            self._start(step, steps, now)
        self._last_step = step
        if self.tty:
            self._draw(step, steps, loss, now)
        else:
            since = now - self._printed_at
            if (step >= self._next_mark and since >= self.min_seconds) or since >= self.seconds:
                self._print(step, steps, loss, now)
        if step >= steps:
            self.close()

    def _start(self, step: int, steps: int, now: float) -> None:
        self.close()
        self._first = (step, now)
        self._printed_at = now
        self._next_mark = self._mark_after(step - 1, steps)
        if self.tty:
            self._bar = tqdm(
                total=steps,
                desc=self.label,
                unit=self.unit,
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
                bar_format="{desc}: {n_fmt}/{total_fmt} " + self.unit + "s |{bar}| {postfix}",
            )

    def _mark_after(self, step: int, steps: int) -> int:
        """The first 10% mark (ceil(k * fraction * steps)) after `step`."""
        k = math.floor(step / (steps * self.fraction)) + 1
        while math.ceil(k * self.fraction * steps - 1e-9) <= step:
            k += 1
        return math.ceil(k * self.fraction * steps - 1e-9)

    def rate(self, step: int, now: float) -> float | None:
        """Steps per second since the end of the epoch's first step; None before the second step."""
        first_step, first_time = self._first or (step, now)
        if step <= first_step or now <= first_time:
            return None
        return (step - first_step) / (now - first_time)

    def status(self, step: int, steps: int, loss: float | None, now: float) -> str:
        """`loss 2.3026, 140 img/s, 2m05s left` (the parts known so far)."""
        parts = [] if loss is None else [f"loss {loss:.4f}"]
        rate = self.rate(step, now)
        if rate is not None:
            parts.append(f"{rate * self.images_per_step:.0f} img/s")
            if step < steps:
                parts.append(f"{duration((steps - step) / rate)} left")
        return ", ".join(parts)

    def _draw(self, step: int, steps: int, loss: float | None, now: float) -> None:
        if self._bar is None:
            return
        self._bar.set_postfix_str(self.status(step, steps, loss, now), refresh=False)
        self._bar.update(step - self._bar.n)

    def _print(self, step: int, steps: int, loss: float | None, now: float) -> None:
        pct = 100 * step // steps
        status = self.status(step, steps, loss, now)
        line = f"{self.label}: {self.unit} {step}/{steps} ({pct}%)" + (f", {status}" if status else "")
        print(line, file=self.stream, flush=True)
        self._printed_at = now
        self._next_mark = self._mark_after(step, steps)

    def close(self) -> None:
        """Remove the bar (the caller's own end-of-epoch line follows)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def track(
    items: Iterable[T], total: int, label: str, images_per_item: int, *, min_total: int = 10, **kwargs
) -> Iterator[T]:
    """Yield `items`, reporting progress with `Progress` when there are at least `min_total` of them."""
    if total < min_total:
        yield from items
        return
    progress = Progress(label, images_per_item, unit="batch", **kwargs)
    try:
        for i, item in enumerate(items, start=1):
            yield item
            progress(min(i, total), total)
    finally:
        progress.close()
