"""Which bags have been ingested: a JSON-lines ledger that survives restarts, and the list of closed bags.

``IngestLedger(path)`` appends one JSON object per line::

    {"bag": "tdmpc2_20250101T120000Z_0003", "identity": "sha256:<metadata.yaml sha256>:<bytes>",
     "status": "ingested", "transitions": 12000, "episodes": 24, "reason": "", "time": "2025-01-01T12:05:00Z"}

Each line is written with one ``write`` on an ``O_APPEND`` descriptor and fsynced before ``mark``
returns, so after a crash the ledger holds every completed ``mark``; a torn last line (a kill during
the write) is ignored when the ledger is loaded. The latest line for a bag name wins.

A bag's identity is the sha256 of its ``metadata.yaml`` (message counts, start time, duration, file
names) plus the total size of its files: a bag replaced under the same name is ingested again.
``status`` is ``"ingested"`` or ``"skipped"`` (a bad bag, with ``reason``); ``is_ingested`` is true for
both, so a bad bag is logged once and not retried on every scan.

``closed_bags(directory)`` lists complete bags only: folders that are not hidden, do not end in
``.partial`` and hold a ``metadata.yaml`` (``BagWriter`` renames a bag there only once it is closed;
``ros2 bag record`` writes metadata.yaml when it closes a bag), oldest name first.

Pure Python: no ROS, no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

from tdmpc2_ros.bags.writer import PARTIAL_SUFFIX
from tdmpc2_ros.runtime.digest import folder_bytes

STATUSES = ("ingested", "skipped")


def is_closed_bag(path) -> bool:
    path = Path(path)
    return (path.is_dir() and not path.name.startswith(".") and not path.name.endswith(PARTIAL_SUFFIX)
            and (path / "metadata.yaml").is_file())


def _name_order(path: Path) -> list:
    """Names in order with their numbers read as numbers: a recorder's bag _10000 comes after _9999
    (a week of one-minute bags), where plain string order would put it first."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


def closed_bags(directory) -> list[Path]:
    """Complete bags directly under ``directory``, oldest first (``BagWriter`` names sort by time)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if is_closed_bag(p)), key=_name_order)


def partial_bags(directory) -> list[Path]:
    """Bags left open by a writer that was killed (hidden ``.<name>.partial`` folders)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and p.name.endswith(PARTIAL_SUFFIX))


def bag_identity(bag) -> str:
    """'sha256:<hex of metadata.yaml>:<total bytes of the bag's files>'. Raises OSError if unreadable."""
    bag = Path(bag)
    digest = hashlib.sha256((bag / "metadata.yaml").read_bytes()).hexdigest()
    size = folder_bytes(bag)
    return f"sha256:{digest}:{size}"


class IngestLedger:
    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict] = {}  # bag name -> latest entry
        self.torn_at: list[int] = []  # numbers (from 1) of the lines a crash cut short
        if self.path.exists():
            for n, line in enumerate(self.path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self.entries[str(entry["bag"])] = entry
                except (ValueError, KeyError, TypeError):
                    self.torn_at.append(n)

    @property
    def torn_lines(self) -> int:
        return len(self.torn_at)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, bag) -> bool:
        return self.is_ingested(bag)

    def entry(self, bag) -> dict | None:
        return self.entries.get(Path(bag).name)

    def state(self, bag) -> str:
        """'pending' (never marked), 'changed' (marked, but replaced since under the same name: to be
        ingested again), 'unreadable' (marked, and gone or unreadable now: what was marked stands),
        or the status it was marked with ('ingested' or 'skipped')."""
        entry = self.entry(bag)
        if entry is None:
            return "pending"
        try:
            if entry.get("identity") != bag_identity(bag):
                return "changed"
        except OSError:
            return "unreadable"
        return str(entry.get("status", "ingested"))

    def is_ingested(self, bag) -> bool:
        """True if this bag (same name and identity) was marked, ingested or skipped."""
        return self.state(bag) not in ("pending", "changed")

    def mark(self, bag, transitions: int = 0, episodes: int = 0, status: str = "ingested", reason: str = "") -> dict:
        """Record a bag as ingested (or skipped, with a reason); durable when this returns."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES} (got {status!r})")
        bag = Path(bag)
        try:
            identity = bag_identity(bag)
        except OSError as e:
            identity = f"unreadable:{type(e).__name__}"
        entry = {"bag": bag.name, "identity": identity, "status": status, "transitions": int(transitions),
                 "episodes": int(episodes), "reason": str(reason),
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        line = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:  # after a torn write, start on a fresh line
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.entries[bag.name] = entry
        return entry

    def pending(self, directory) -> list[Path]:
        """Closed bags under ``directory`` not yet in the ledger, oldest first."""
        return [b for b in closed_bags(directory) if not self.is_ingested(b)]
