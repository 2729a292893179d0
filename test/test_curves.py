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
