"""scripts/setup.sh installs requirements.txt held to constraints.txt (the versions the tests last
passed with, written by scripts/lock.sh). A requirement added without rerunning lock.sh would be
installed at whatever version is newest on the day: every requirement must be pinned there, at a
version its own specifier admits."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _lines(name: str) -> list[str]:
    return [line.split("#")[0].strip() for line in (REPO / name).read_text().splitlines()
            if line.split("#")[0].strip()]


def test_every_requirement_is_pinned_in_constraints_at_a_version_it_admits():
    pins = {}
    for line in _lines("constraints.txt"):
        name, _, version = line.partition("==")
        assert version, f"constraints.txt: {line!r} is not name==version"
        pins[canonicalize_name(name)] = version
    requirements = [Requirement(line) for line in _lines("requirements.txt")]
    assert len(requirements) > 20 and len(pins) > len(requirements)
    for req in requirements:
        name = canonicalize_name(req.name)
        if name == "torch":  # pinned in requirements.txt itself (its wheels carry local tags such as +cpu)
            assert str(req.specifier) == "==2.13.0"
            continue
        assert name in pins, f"{req.name} is not in constraints.txt: run scripts/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), (req.name, str(req.specifier), pins[name])

