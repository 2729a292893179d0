"""Where the package's shared files (config/, models/, launch/) live: the ament share directory
when installed by colcon, otherwise the source checkout (pip install -e, or running from the repo).
And where the planner's model is: a model folder, or the newest version of a model store."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tdmpc2_ros.ros import stop
from tdmpc2_ros.runtime.model_store import ModelStore, is_store, version_of_folder

PACKAGE = "tdmpc2_ros"


def share_dir() -> Path:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH (no workspace sourced)
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parents[2]


def default_model() -> Path:
    return share_dir() / "models" / "cartpole_swingup"


def resolve_model_path(path: str, wait_s: float, log) -> str:
    """A model store folder (versions with manifests) stands for its newest version. An empty store
    is waited on for up to wait_s (a learning loop whose trainer writes the first version)."""
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        if os.path.exists(path) and not is_store(path):
            return path
        if is_store(path):
            store = ModelStore(path)
            latest = store.latest()
            if latest is not None:
                return str(store.path(latest.version))
        if time.monotonic() >= deadline:
            return path  # the loader names what is missing
        if stop.requested():  # a stop during the wait is a clean stop, not a missing model
            raise KeyboardInterrupt("stopped while waiting for a model")
        if not announced:
            log.info(f"waiting up to {wait_s:g} s for a model to appear in {path}")
            announced = True
        time.sleep(0.5)


def version_of(model_path: str, planner) -> str:
    """A model store version folder names itself in its manifest; otherwise the graph's sha256."""
    version = version_of_folder(model_path)
    if version is not None:
        return version
    return planner.sha256[:12] if planner is not None else os.path.basename(os.path.normpath(model_path))
