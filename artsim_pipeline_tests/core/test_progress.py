"""Progress lines every ~10% of a long step (core/progress.py)."""

from __future__ import annotations

import re

from artsim_pipeline.core.progress import Progress, progress_line
from artsim_pipeline_tests.core.support import assert_monotonic_to_total


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_step_at_a_time_reports_every_tenth_and_the_end():
    lines: list[str] = []
    clock = FakeClock()
    ticker = Progress(lines.append, 1300, "faces", clock=clock)
    for done in range(1, 1301):
        clock.now = done / 10.0  # 10 images/s
        ticker.update(done)
    assert ticker.finish() is None  # already reported 1300/1300
    assert assert_monotonic_to_total(lines, 1300) == list(range(130, 1301, 130))
    assert lines[0] == "faces: 130/1300 images (10%), 10.0 images/s"
    assert lines[-1] == "faces: 1300/1300 images (100%), 10.0 images/s"


def test_batches_crossing_marks_report_once_per_mark():
    lines: list[str] = []
    ticker = Progress(lines.append, 256, "efficientnet_lite0")  # marks every 25 items
    for done in range(32, 257, 32):  # batches of 32 skip some marks
        ticker.update(done)
    done = assert_monotonic_to_total(lines, 256)
    assert done == [32, 64, 96, 128, 160, 192, 224, 256]
    assert re.fullmatch(r"efficientnet_lite0: 64/256 images \(25%\), [\d.]+ images/s", lines[1])

    few: list[str] = []
    ticker = Progress(few.append, 7, "faces", unit="files")
    for done in (3, 6, 7):
        ticker.update(done, detail=f"{done} seen")
    assert few[-1].startswith("faces: 7/7 files (100%), ") and few[-1].endswith(", 7 seen")
    assert assert_monotonic_to_total(few, 7) == [3, 6, 7]


def test_finish_emits_the_end_once_and_empty_work_reports_zero_of_zero():
    lines: list[str] = []
    ticker = Progress(lines.append, 100, "x", unit="items")
    ticker.update(5)  # below the first mark: nothing
    assert lines == []
    ticker.finish()
    ticker.finish()
    assert len(lines) == 1 and lines[0].startswith("x: 100/100 items (100%), ")
    assert progress_line("x", 50, 100, 2.0, "items", "3 failed") == "x: 50/100 items (50%), 25.0 items/s, 3 failed"

    empty: list[str] = []
    Progress(empty.append, 0, "faces").finish()
    assert empty == ["faces: 0/0 images (100%), 0.0 images/s"]


def test_without_a_callable_nothing_is_emitted():
    ticker = Progress(None, 10, "faces")
    assert ticker.update(10) is not None  # the line is still returned to the caller
    assert ticker.finish() is None
