"""Which CPU a benchmark ran on, written into its JSON and its table.

The project's 2-core machine is not the same from one session to the next (docs/benchmarks.md,
"Machines"): an Intel Xeon with AVX-512 and AMX, a Zen 4 EPYC with AVX-512 on 256-bit units, a Zen 3
EPYC with AVX2 only. A plan's speed depends most on which vector instructions ONNX Runtime's kernels
can use, so a figure is only comparable with one measured on the same CPU and instruction sets. Read
from Linux's /proc/cpuinfo; elsewhere the fields are unknown (None), never guessed.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

# The instruction sets that decide which fp32 / bf16 kernels ONNX Runtime and torch run, in the
# names /proc/cpuinfo gives them.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def parse_cpuinfo(text: str) -> dict:
    """The first processor's vendor, model name, family, model and the ISA_FLAGS it has, from the
    text of /proc/cpuinfo. Fields it does not give are None."""
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break  # the first processor's block is enough: a VM's cores are alike
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    flags = set(first["flags"].split()) if "flags" in first else None
    return {"vendor": first.get("vendor_id"), "model_name": first.get("model name"),
            "family": _int(first.get("cpu family")), "model": _int(first.get("model")),
            "isa": None if flags is None else [f for f in ISA_FLAGS if f in flags]}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def cpu() -> dict:
    """parse_cpuinfo of this machine, or every field None where there is no /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return parse_cpuinfo("")


def machine(threads: int | None = None) -> dict:
    """What every benchmark writes as its "machine": the CPU, its core count, the platform and the
    versions that change the kernels (read from the installed packages: nothing is imported)."""
    info = {"cpu": cpu(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": _version("torch"),
            "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu")}
    if threads is not None:
        info["threads"] = threads
    return info


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe(m: dict) -> str:
    """One line for a table's head, e.g. 'AMD EPYC (family 25, model 1), 2 cores, AVX2 FMA, no AVX-512'."""
    c = m.get("cpu") or {}
    if not c.get("model_name"):
        return f"CPU unknown, {m.get('cpu_count', '?')} cores"
    isa = c.get("isa")
    if isa is None:
        sets = "instruction sets unknown"
    else:
        sets = " ".join(f.upper().replace("_", "-") for f in isa) or "none of " + ", ".join(ISA_FLAGS)
        if "avx512f" not in isa:
            sets += ", no AVX-512"
    return f"{c['model_name']} (family {c.get('family')}, model {c.get('model')}), {m.get('cpu_count', '?')} cores, {sets}"
