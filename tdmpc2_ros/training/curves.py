"""Learning curves: CSV logging and a PNG beside the published TD-MPC2 curve for the same task."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np


def find_paper_results(start: Path | None = None) -> Path | None:
    """Locate shared/reference/paper-results (beside the checkout) or $TDMPC2_PAPER_RESULTS."""
    env = os.environ.get("TDMPC2_PAPER_RESULTS")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for base in [start or Path.cwd(), Path(__file__).resolve()]:
        for parent in [base, *base.parents]:
            for cand in (parent / "shared/reference/paper-results", parent / "reference/paper-results"):
                if cand.is_dir():
                    return cand
    return None


def paper_curve(task: str, method: str = "tdmpc2", root: Path | None = None):
    """(steps, mean, min, max) over seeds of a published curve, or None if not available."""
    root = root or find_paper_results()
    path = root / method / f"{task}.csv" if root else None
    if path is None or not path.exists():
        return None
    rows = list(csv.DictReader(open(path)))
    by_step: dict[int, list[float]] = {}
    for r in rows:
        by_step.setdefault(int(float(r["step"])), []).append(float(r["reward"]))
    steps = np.array(sorted(by_step))
    vals = [np.array(by_step[s]) for s in steps]
    return steps, np.array([v.mean() for v in vals]), np.array([v.min() for v in vals]), np.array([v.max() for v in vals])


_log = logging.getLogger(__name__)


class CsvLog:
    """Append-only CSV that survives restarts (the header is written once). A row that cannot be
    written (a full disk) is kept in memory and written before the next one: a learning curve is
    never why training stops, and loses no row once there is room again. A write that fails part-way
    is cut back to the last whole row, and so is a row torn by a crash (SIGKILL, power loss) when the
    file is opened again: a resumed run never reads half a row, and never glues its next row to one."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = Path(path), fields
        self.pending: list[list] = []  # rows not yet on disk
        self.failing = False
        if self.path.exists():
            self._cut_torn_row()
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.pending.append(list(fields))  # the header: on a full disk, written with the first row
            self._flush()

    def append(self, **row):
        self.pending.append([row.get(k, "") for k in self.fields])
        self._flush()

    def _flush(self):
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerows(self.pending)
        except OSError as e:
            try:
                os.truncate(self.path, size)  # frees what the torn write took; the rows stay pending
            except OSError:
                pass
            if not self.failing:  # said once per streak of failures
                _log.warning("could not write to %s (%s); its rows are kept until there is room", self.path, e)
            self.failing = True
            return
        self.pending, self.failing = [], False

    def _cut_torn_row(self):
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1  # 0: not even the header is whole
            _log.warning("%s ended in a torn row (a crash while writing it): cut back to its last whole row", self.path)
            os.truncate(self.path, keep)

    def read(self) -> list[dict]:
        return list(csv.DictReader(open(self.path))) if self.path.exists() else []

    def truncate_after(self, step: int, key: str = "step"):
        """Drop rows logged past `step` (an interrupted run resuming from an earlier checkpoint)."""
        rows = [r for r in self.read() if int(float(r[key])) <= step]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(rows)


_warned_missing = False  # the missing results are named once per process, not on every redraw


def _paper_or_why(task: str):
    """(the published curve, None), or (None, why the plot goes without it)."""
    global _warned_missing
    root = find_paper_results()
    if root is None:
        why = ("published TD-MPC2 results not found (looked for shared/reference/paper-results above the working "
               "directory and the package; set TDMPC2_PAPER_RESULTS)")
        if not _warned_missing:
            _warned_missing = True
            _log.warning("%s: learning-curve plots go without the paper's curve", why)
        return None, why
    paper = paper_curve(task, root=root)
    return paper, (None if paper is not None else f"no published curve for {task} in {root}")


def plot_learning_curve(eval_rows: list[dict], train_rows: list[dict], task: str, out: Path,
                        title_extra: str = "") -> str | None:
    """Write the PNG; returns why the paper's curve is not on it, or None when it is (or when `task`
    is empty: a robot's own task, which has no published curve to compare with)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if train_rows:
        ax.plot([int(r["step"]) for r in train_rows], [float(r["episode_reward"]) for r in train_rows],
                color="0.75", lw=0.8, label="training episodes (with exploration)")
    if eval_rows:
        ax.plot([int(r["step"]) for r in eval_rows], [float(r["episode_reward"]) for r in eval_rows],
                "o-", color="C0", label="tdmpc2_ros evaluation")
    paper, why = _paper_or_why(task) if task else (None, None)
    if why:  # said on the plot itself, so a reader does not take its absence for a choice
        ax.text(0.01, 0.99, why, transform=ax.transAxes, va="top", fontsize=6, color="0.4", wrap=True)
    if paper is not None:
        steps, mean, lo, hi = paper
        limit = max([int(r["step"]) for r in eval_rows + train_rows] or [steps[-1]])
        keep = steps <= max(limit, 100_000)
        ax.plot(steps[keep], mean[keep], "s--", color="C3", label="TD-MPC2 paper (mean of 3 seeds)")
        ax.fill_between(steps[keep], lo[keep], hi[keep], color="C3", alpha=0.15)
    ax.set_xlabel("environment steps (action repeat 2 included)")
    ax.set_ylabel("episode return")
    ax.set_title(f"{task or 'robot'} {title_extra}".strip())
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return why
