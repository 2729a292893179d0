"""A versioned, content-addressed store of exported planner ladders, and the announcement that
tells a running planner about a new version.

Layout:

    <store>/<version>/ladder.json, planner_*.onnx, manifest.json
    <store>/.<version>.tmp/          (being written; never read)

A version is ``v<NNNN>-<sha12>``: a sequence number, one more than the newest version's (so `ls` sorts
by age up to v9999, and ``versions()`` by number beyond), and the first 12 hex digits of the hash over
the files' own sha256s, so the same weights get the same suffix. ``prune`` removes all but the newest
versions and one per ``every_s`` seconds of the older ones (trainer_node's ``store_keep`` and
``store_keep_every_s``). A version folder is renamed into place only after every file is written and
fsynced: a reader sees a complete version or none. The manifest records version, parent version, training steps, the bags
that were used and each file's sha256.

The announcement (JSON in a std_msgs/String, transient-local QoS) names the version and every
file's sha256, and either the store path (robot shares the trainer's disk) or the files' bytes in
base64 (it does not). ``materialise`` turns one into a checked local folder, writing inline bytes into
the planner's cache only once they check out; ``prune_cache`` keeps that cache from growing without
end. Pure Python: no ROS, no torch.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tdmpc2_ros.runtime.digest import file_sha256, folder_bytes
from tdmpc2_ros.runtime.ladder import LADDER_FILE, read_ladder

MANIFEST = "manifest.json"


class StoreError(RuntimeError):
    pass


@dataclass
class Manifest:
    version: str
    parent: str = ""
    env_steps: int = 0
    updates: int = 0
    bags: list = field(default_factory=list)
    files: dict = field(default_factory=dict)  # file name -> sha256
    created: float = 0.0
    notes: dict = field(default_factory=dict)  # validation results, eval returns, ...

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        return cls(**json.loads(text))


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def versions(self) -> list[str]:
        """Complete versions, oldest first (by sequence number: v10000 comes after v9999)."""
        names = [p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()]
        return sorted(names, key=lambda name: (_sequence(name), name))

    def latest(self) -> Manifest | None:
        v = self.versions()
        return self.manifest(v[-1]) if v else None

    def manifest(self, version: str) -> Manifest:
        path = self.root / version / MANIFEST
        try:
            return Manifest.from_json(path.read_text())
        except (OSError, ValueError, TypeError) as e:
            raise StoreError(f"cannot read the manifest of version {version} ({path}): {e}") from e

    def path(self, version: str) -> Path:
        return self.root / version

    def add(self, ladder_folder: str | os.PathLike, parent: str = "", env_steps: int = 0, updates: int = 0,
            bags: list | None = None, notes: dict | None = None) -> Manifest:
        """Copy an exported ladder folder into the store as a new version."""
        src = Path(ladder_folder)
        rungs = read_ladder(src)  # refuses a folder that is not a ladder
        names = [LADDER_FILE] + [r.path.name for r in rungs]
        files = {n: file_sha256(src / n) for n in names}
        digest = hashlib.sha256("".join(f"{n}={files[n]};" for n in sorted(files)).encode()).hexdigest()[:12]
        # One more than the newest, not than the count: versions pruned or deleted leave gaps, and a
        # number used again would sort a new version before the ones kept.
        version = f"v{max(map(_sequence, self.versions()), default=0) + 1:04d}-{digest}"
        tmp = self.root / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            for n in names:
                shutil.copyfile(src / n, tmp / n)
            m = Manifest(version, parent, int(env_steps), int(updates), list(bags or []), files, time.time(),
                         dict(notes or {}))
            (tmp / MANIFEST).write_text(m.to_json())
            for n in names + [MANIFEST]:
                with open(tmp / n, "rb+") as f:
                    os.fsync(f.fileno())
            _fsync_dir(tmp)
            os.replace(tmp, self.root / version)
        except BaseException:  # a full disk, say: leave no half-written version behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        return m

    def prune(self, keep: int, protect=(), every_s: float = 0.0) -> list[str]:
        """Remove all but the `keep` newest versions, those in `protect` and, with `every_s` > 0, one
        version per `every_s` seconds of the older ones (keep 0: remove nothing).

        The milestones are TensorFlow's CheckpointManager's ``keep_checkpoint_every_n_hours``: walking
        from the oldest, a version is kept if it was created at least `every_s` after the last one kept
        (the oldest is always kept: where the lineage began). A version once kept stays kept at the next
        prune, so a robot that learns for weeks keeps its history at a bounded rate. A version whose
        manifest cannot be read is left alone (nothing is deleted on a guess).

        A version folder is renamed out of sight before it is deleted, so a reader never finds half of
        one. Returns the removed versions. A planner reading this store by path may run or roll back to
        an older version: keep enough for it."""
        if keep <= 0:
            return []
        removed, last_kept = [], -math.inf
        for version in self.versions()[:-keep]:
            try:
                created = float(self.manifest(version).created)
            except StoreError:
                continue
            if every_s > 0 and created - last_kept >= every_s:
                last_kept = created
                continue
            if version in protect:
                continue
            hidden = self.root / f".{version}.removing"
            os.replace(self.root / version, hidden)
            shutil.rmtree(hidden, ignore_errors=True)
            removed.append(version)
        return removed

    def size_bytes(self) -> int:
        """Bytes held by the complete versions (for /diagnostics: the store is what grows)."""
        total = 0
        for v in self.versions():
            try:
                total += folder_bytes(self.root / v)
            except OSError:  # removed by hand meanwhile
                pass
        return total

    def announcement(self, version: str, inline: bool = False) -> dict:
        """What the trainer publishes on the model-update topic."""
        m = self.manifest(version)
        msg = {"version": m.version, "parent": m.parent, "env_steps": m.env_steps, "files": m.files}
        if inline:
            msg["inline"] = {n: base64.b64encode((self.path(version) / n).read_bytes()).decode() for n in m.files}
        else:
            msg["path"] = str(self.path(version).resolve())
        return msg


class VersionsInUse:
    """The store versions that running planners report on /diagnostics (``model_versions_in_use``:
    the version each runs and those it may roll back to), for the trainer's prune: a planner that
    reads the store by path loads its other rungs (a step up, the standby) and a rollback's from the
    version's folder, so pruning a version in use would make those loads fail. A version stays
    protected for `hold_s` after the last report of it (a planner that stopped reporting no longer
    holds anything). Thread-safe: reports come from the executor, prunes from the training thread."""

    def __init__(self, hold_s: float, clock=time.monotonic):
        self.hold_s, self._clock = float(hold_s), clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def saw(self, versions) -> None:
        now = self._clock()
        with self._lock:
            for v in versions:
                if v:
                    self._seen[v] = now

    def current(self) -> set[str]:
        if self.hold_s <= 0:
            return set()
        now = self._clock()
        with self._lock:
            for v in [v for v, t in self._seen.items() if now - t > self.hold_s]:
                del self._seen[v]
            return set(self._seen)


def _sequence(version: str) -> int:
    """The number of a version name 'v0042-<hash>' (-1 for a name that has none)."""
    head = version[1:].partition("-")[0]
    return int(head) if version.startswith("v") and head.isdigit() else -1


def is_store(path: str | os.PathLike) -> bool:
    """A folder of versions (possibly none yet), not a ladder folder itself. Hidden entries are
    versions being written (.v0001-....tmp): a store holding only those is still empty."""
    p = Path(path)
    if not p.is_dir() or (p / LADDER_FILE).is_file():
        return False
    entries = [d for d in p.iterdir() if not d.name.startswith(".")]
    return not entries or any((d / MANIFEST).is_file() for d in entries)


def version_of_folder(folder: str | os.PathLike) -> str | None:
    """The version a store version folder names in its manifest (None for any other folder)."""
    try:
        return Manifest.from_json((Path(folder) / MANIFEST).read_text()).version
    except (OSError, ValueError, TypeError):
        return None


def _plain_name(name, what: str) -> str:
    """A version or file name that names one entry of a folder: an announcement comes over an
    unauthenticated topic, and its names become paths under the cache (a version '../../x' or '/x'
    would write elsewhere, over another model's files say)."""
    text = str(name)
    if (not text or text.startswith(".") or any(c in text for c in "/\\\0")
            or Path(text).name != text):
        raise StoreError(f"announcement names {what} {text!r}, which is not a plain file name")
    return text


def _verify(folder: Path, version: str, files: dict) -> None:
    for name, sha in files.items():
        p = folder / name
        if not p.is_file():
            raise StoreError(f"version {version}: {p} is missing")
        got = file_sha256(p)
        if got != sha:
            raise StoreError(f"version {version}: {name} has sha256 {got[:16]}..., the announcement says {str(sha)[:16]}...")


def _write_inline(inline, files: dict, version: str, cache_dir: Path) -> Path:
    """Inline bytes -> cache_dir/<version>/, decoded and checked in a hidden folder first and renamed
    into place only when every file's sha256 holds: a bad announcement leaves nothing behind, and
    never touches a version already cached (a version names its content, so another announcement of
    it with other bytes is refused, not written over the one a planner may roll back to)."""
    folder = cache_dir / version
    if folder.exists():
        try:
            _verify(folder, version, files)
        except StoreError as e:
            raise StoreError(f"{e} (in {folder}, cached earlier; the cached files are kept)") from None
        os.utime(folder)  # announced again: as new as a fresh one to prune_cache
        return folder
    if not isinstance(inline, dict):
        raise StoreError(f"announcement of {version}: inline is {type(inline).__name__}, expected file name -> base64")
    tmp = cache_dir / f".{version}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, b64 in inline.items():
            if name not in files or _plain_name(name, "inline file") != name:
                raise StoreError(f"announcement of {version}: unexpected inline file {name!r}")
            try:
                data = base64.b64decode(b64, validate=True)
            except (TypeError, ValueError) as e:  # binascii.Error is a ValueError
                raise StoreError(f"announcement of {version}: inline file {name} is not base64 ({e})") from None
            (tmp / name).write_bytes(data)
        _verify(tmp, version, files)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise
            _verify(folder, version, files)  # another planner sharing this cache put it there first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def materialise(announcement: dict, cache_dir: str | os.PathLike) -> Path:
    """The local model folder an announcement refers to, every file checked against its sha256.
    Inline bytes are written under cache_dir/<version>/ (only once they check out). Raises StoreError
    naming the problem."""
    try:
        version, files = str(announcement["version"]), dict(announcement["files"])
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"announcement lacks version/files: {e}") from e
    _plain_name(version, "version")
    for name in files:
        _plain_name(name, "file")
    if LADDER_FILE not in files:
        raise StoreError(f"announcement of {version} lists no {LADDER_FILE}")
    if "inline" in announcement:
        return _write_inline(announcement["inline"], files, version, Path(cache_dir))
    if "path" not in announcement:
        raise StoreError(f"announcement of {version} has neither a path nor inline files")
    folder = Path(str(announcement["path"]))
    _verify(folder, version, files)
    return folder


def prune_cache(cache_dir: str | os.PathLike, keep: int, in_use=()) -> list[Path]:
    """Remove inline-announced versions from a planner's cache, all but the `keep` newest (by when
    they were written) and those `in_use` (folders the planner runs or may roll back to), and hidden
    folders a materialise left behind more than an hour ago. A robot that learns for days would
    otherwise fill its disk with old versions (one is the whole ladder: about 32 MB for
    models/cartpole_swingup). keep 0: remove nothing. Returns what was removed."""
    root = Path(cache_dir)
    if keep <= 0 or not root.is_dir():
        return []
    protected = {Path(p).resolve() for p in in_use if p}
    entries = [p for p in root.iterdir() if p.is_dir()]
    versions = sorted((p for p in entries if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime, reverse=True)
    stale = [p for p in entries if p.name.startswith(".") and time.time() - p.stat().st_mtime > 3600]
    removed = []
    for p in versions[keep:] + stale:
        if p.resolve() in protected:
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed

