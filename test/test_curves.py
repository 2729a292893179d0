"""Learning-curve plots beside the paper's curve (training/curves.py): a plot that goes without the
published curve says why, on the figure and in the return value, and warns once when the published
results cannot be found at all (a run outside the checkout would otherwise lose the curve silently)."""

from __future__ import annotations

import builtins
import logging

import numpy as np
import pytest

from tdmpc2_ros.training import curves
from tdmpc2_ros.training.curves import CsvLog

ROWS = [{"step": s, "episode_reward": r} for s, r in [(0, 10.0), (50_000, 400.0), (100_000, 780.0)]]


@pytest.fixture
def paper_root(tmp_path, monkeypatch):
    root = tmp_path / "paper-results"
    (root / "tdmpc2").mkdir(parents=True)
    (root / "tdmpc2" / "cartpole-swingup.csv").write_text(
        "step,reward,seed\n0,2.0,1\n0,4.0,2\n100000,800.0,1\n100000,760.0,2\n")
    monkeypatch.setenv("TDMPC2_PAPER_RESULTS", str(root))
    monkeypatch.setattr(curves, "_warned_missing", False)
    return root


def test_paper_curve_is_the_mean_and_range_over_seeds(paper_root):
    steps, mean, lo, hi = curves.paper_curve("cartpole-swingup")
    assert steps.tolist() == [0, 100_000]
    np.testing.assert_allclose(mean, [3.0, 780.0])
    np.testing.assert_allclose(lo, [2.0, 760.0])
    np.testing.assert_allclose(hi, [4.0, 800.0])
    assert curves.paper_curve("no-such-task") is None


def test_a_plot_with_the_paper_curve_reports_nothing_missing(paper_root, tmp_path, caplog):
    out = tmp_path / "with.png"
    assert curves.plot_learning_curve([], ROWS, "cartpole-swingup", out) is None
    assert out.stat().st_size > 0 and not caplog.records


def test_a_task_without_a_published_curve_says_so(paper_root, tmp_path, caplog):
    out = tmp_path / "other.png"
    why = curves.plot_learning_curve([], ROWS, "walker-run-backwards", out)
    assert why == f"no published curve for walker-run-backwards in {paper_root}"
    assert out.stat().st_size > 0 and not caplog.records  # the results were found: nothing to warn about


def test_a_robot_task_is_plotted_without_comparison(paper_root, tmp_path):
    out = tmp_path / "robot.png"
    assert curves.plot_learning_curve([], ROWS, "", out) is None and out.stat().st_size > 0


def test_missing_paper_results_are_named_once_and_the_plot_is_still_written(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TDMPC2_PAPER_RESULTS", str(tmp_path / "nowhere"))
    monkeypatch.setattr(curves, "_warned_missing", False)
    caplog.set_level(logging.WARNING, logger=curves.__name__)
    for name in ("a.png", "b.png"):
        why = curves.plot_learning_curve([], ROWS, "cartpole-swingup", tmp_path / name)
        assert why is not None and "TDMPC2_PAPER_RESULTS" in why
        assert (tmp_path / name).stat().st_size > 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "without the paper's curve" in warnings[0].getMessage()


def test_a_csv_row_that_cannot_be_written_is_kept_until_there_is_room(tmp_path, monkeypatch, caplog):
    """A full disk does not end a run over its learning curve, and loses no row."""
    log = CsvLog(tmp_path / "train.csv", ["step", "reward"])
    log.append(step=1, reward=0.5)
    real_open = builtins.open

    def full_disk(path, mode="r", *args, **kwargs):
        if str(path) == str(log.path) and "a" in mode:
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    with caplog.at_level(logging.WARNING):
        log.append(step=2, reward=0.25)
        log.append(step=3, reward=0.125)
    assert [r["step"] for r in log.read()] == ["1"] and len(log.pending) == 2
    assert sum("rows are kept" in r.getMessage() for r in caplog.records) == 1  # once per streak
    monkeypatch.setattr(builtins, "open", real_open)
    log.append(step=4, reward=1.0)
    assert [(r["step"], r["reward"]) for r in log.read()] == [("1", "0.5"), ("2", "0.25"), ("3", "0.125"), ("4", "1.0")]
    assert log.pending == []


def test_a_write_torn_part_way_is_cut_back_and_written_whole_later(tmp_path, monkeypatch):
    """ENOSPC after part of a row reached the file: the part is cut off again, so the row is not
    written twice (half, then whole) once there is room."""
    log = CsvLog(tmp_path / "train.csv", ["step", "reward"])
    log.append(step=1, reward=0.5)
    real_open = builtins.open

    class TornFile:
        def __init__(self, f):
            self.f = f

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise OSError(28, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def torn(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return TornFile(f) if str(path) == str(log.path) and "a" in mode else f

    monkeypatch.setattr(builtins, "open", torn)
    log.append(step=2, reward=0.25)
    monkeypatch.setattr(builtins, "open", real_open)
    assert log.path.read_bytes() == b"step,reward\r\n1,0.5\r\n" and len(log.pending) == 1
    log.append(step=3, reward=0.125)
    assert [(r["step"], r["reward"]) for r in log.read()] == [("1", "0.5"), ("2", "0.25"), ("3", "0.125")]


def test_a_row_torn_by_a_crash_is_cut_when_the_log_is_opened_again(tmp_path, caplog):
    """A SIGKILL mid-write leaves half a row: the resumed run drops it (with a warning), reads whole
    rows only (truncate_after parses every row) and starts its next row on a line of its own."""
    path = tmp_path / "train.csv"
    path.write_text("step,reward\r\n1,0.5\r\n2,0.2")
    with caplog.at_level(logging.WARNING):
        log = CsvLog(path, ["step", "reward"])
    assert any("torn row" in r.getMessage() for r in caplog.records)
    log.truncate_after(10)
    log.append(step=2, reward=0.25)
    assert [(r["step"], r["reward"]) for r in log.read()] == [("1", "0.5"), ("2", "0.25")]
    # Torn inside the header, or a header never written (the disk was full at start): a whole header.
    for text in ("ste", ""):
        path.write_text(text)
        log = CsvLog(path, ["step", "reward"])
        log.append(step=1, reward=0.5)
        assert log.read() == [{"step": "1", "reward": "0.5"}]


def test_a_header_that_cannot_be_written_at_start_is_kept_with_the_rows(tmp_path, monkeypatch):
    real_open = builtins.open
    path = tmp_path / "train.csv"

    def full_disk(p, mode="r", *args, **kwargs):
        if str(p) == str(path) and ("a" in mode or "w" in mode):
            raise OSError(28, "No space left on device")
        return real_open(p, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    log = CsvLog(path, ["step", "reward"])  # starting on a full disk is no reason to stop a run
    log.append(step=1, reward=0.5)
    monkeypatch.setattr(builtins, "open", real_open)
    log.append(step=2, reward=0.25)
    assert [r["step"] for r in log.read()] == ["1", "2"]
