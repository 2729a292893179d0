"""Where the package's shared files (config/, models/, launch/) live: the ament share directory
when installed by colcon, otherwise the source checkout (pip install -e, or running from the repo)."""

from __future__ import annotations

from pathlib import Path

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
