"""Progress: a line every 10% of an epoch or every 60 s off a terminal, a live bar on one."""

from __future__ import annotations

import io
import re

import pytest

from semisup.core.progress import Progress, duration, track


class Clock:
    """A clock the test advances by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run_epoch(progress: Progress, clock: Clock, steps: int, seconds_per_step: float) -> None:
    for step in range(1, steps + 1):
        clock.now += seconds_per_step
        progress(step, steps, 2.0 + 1.0 / step)


def _steps(out: str) -> list[int]:
    return [int(m) for m in re.findall(r"step (\d+)/", out)]


def test_a_line_at_every_tenth_of_a_fast_epoch():
    out, clock = io.StringIO(), Clock()
    progress = Progress("paws", 250, stream=out, tty=False, clock=clock, min_seconds=0)
    _run_epoch(progress, clock, 400, 0.1)  # 40 s an epoch: the 10% marks come first
    assert _steps(out.getvalue()) == [40, 80, 120, 160, 200, 240, 280, 320, 360, 400]
    first = out.getvalue().splitlines()[0]
    # 39 steps after the first in 3.9 s: 10 steps/s x 250 images; 360 steps left at 10 steps/s.
    assert first == "paws: step 40/400 (10%), loss 2.0250, 2500 img/s, 36s left"


def test_a_line_every_60_seconds_when_a_tenth_takes_longer():
    out, clock = io.StringIO(), Clock()
    progress = Progress("paws", 250, stream=out, tty=False, clock=clock, min_seconds=0)
    _run_epoch(progress, clock, 100, 8.0)  # a tenth is 80 s: the 60 s rule comes first, then the mark
    # Step 9 ends 64 s after step 1, the 10% mark is step 10; then 64 s later step 18, the mark 20...
    expected = [9, 10] + [s for tens in range(10, 100, 10) for s in (tens + 8, tens + 10)]
    assert _steps(out.getvalue()) == expected
    # 8 steps in 64 s: 0.125 steps/s x 250 images = 31 img/s; 91 steps left take 728 s.
    assert out.getvalue().splitlines()[0] == "paws: step 9/100 (9%), loss 2.1111, 31 img/s, 12m08s left"


def test_lines_are_at_least_5_seconds_apart_by_default():
    out, clock = io.StringIO(), Clock()
    progress = Progress("paws", 250, stream=out, tty=False, clock=clock)
    _run_epoch(progress, clock, 400, 0.125)  # a tenth is 4.875 s: the first step past each mark prints
    assert _steps(out.getvalue()) == list(range(41, 400, 40))
    out, clock = io.StringIO(), Clock()
    progress = Progress("paws", 250, stream=out, tty=False, clock=clock)
    _run_epoch(progress, clock, 9, 0.1)  # an epoch of a second: its end-of-epoch line is enough
    assert out.getvalue() == ""


def test_fewer_steps_than_ten_print_every_step_and_epochs_restart():
    out, clock = io.StringIO(), Clock()
    progress = Progress("infonce", 500, stream=out, tty=False, clock=clock, min_seconds=0)
    _run_epoch(progress, clock, 4, 1.0)
    _run_epoch(progress, clock, 4, 1.0)  # a second epoch: step goes back to 1
    assert _steps(out.getvalue()) == [1, 2, 3, 4] * 2
    # The first step includes tracing: no rate yet, only the loss.
    assert out.getvalue().splitlines()[0] == "infonce: step 1/4 (25%), loss 3.0000"


def test_terminal_bar_shows_steps_loss_rate_and_time_left_then_clears():
    out, clock = io.StringIO(), Clock()
    progress = Progress("suncet", 100, stream=out, tty=True, clock=clock)
    for step in range(1, 6):
        clock.now += 0.5
        progress(step, 11, 1.5)
    progress._bar.refresh()
    text = out.getvalue()
    assert "suncet: 5/11 steps" in text and "loss 1.5000" in text
    assert "200 img/s" in text and "3s left" in text  # 2 steps/s x 100 images; 6 steps at 2 steps/s
    for step in range(6, 12):
        progress(step, 11, 1.5)
    assert progress._bar is None  # the epoch is over: the bar is gone (leave=False)


def test_track_yields_every_item_and_reports_large_inputs_only():
    out = io.StringIO()
    assert list(track(range(12), 12, "embed test", 500, stream=out, tty=False, min_seconds=0)) == list(
        range(12)
    )
    assert re.findall(r"batch (\d+)/12", out.getvalue()) == [
        str(i) for i in (2, 3, 4, 5, 6, 8, 9, 10, 11, 12)
    ]
    small = io.StringIO()
    assert list(track(range(3), 3, "embed labeled", 500, stream=small, tty=False)) == [0, 1, 2]
    assert small.getvalue() == ""


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (42, "42s"), (185, "3m05s"), (3720, "1h02m")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_describe_devices_names_where_replicas_run():
    import tensorflow as tf

    from semisup.training.distribute import describe_devices

    gpus = tf.config.list_physical_devices("GPU")
    expected = "GPU:0" if gpus else "CPU:0"
    assert describe_devices(tf.distribute.get_strategy()).split(" (")[0] == expected
    assert describe_devices(tf.distribute.OneDeviceStrategy("/cpu:0")) == "CPU:0"
