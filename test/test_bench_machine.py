"""Which CPU a benchmark ran on (benchmark/machine.py): read from /proc/cpuinfo, written into every
benchmark's JSON and named at the head of its table, so that a figure is compared only with one from
the same instruction sets."""

from __future__ import annotations

import json

from ros_harness import REPO
from tdmpc2_ros.benchmark import core, loop
from tdmpc2_ros.benchmark.machine import ISA_FLAGS, cpu, describe, machine, parse_cpuinfo


def _cpuinfo(vendor: str, name: str, family: int, model: int, flags: str) -> str:
    """Two processors' blocks, as Linux writes them; the second differs, to show only the first is read."""
    block = (f"processor\t: {{n}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
             f"model name\t: {name}\nflags\t\t: fpu sse2 {{flags}}\n\n")
    return block.format(n=0, flags=flags) + block.format(n=1, flags="avx512f")


ZEN3 = _cpuinfo("AuthenticAMD", "AMD EPYC", 25, 1, "avx avx2 fma sha_ni vaes")
ZEN4 = _cpuinfo("AuthenticAMD", "AMD EPYC", 25, 17, "avx2 fma avx512f avx512_vnni avx512_bf16")
XEON = _cpuinfo("GenuineIntel", "Intel(R) Xeon(R) Platinum", 6, 143,
                "avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile")


def test_the_first_processors_instruction_sets_are_read_by_name():
    zen3 = parse_cpuinfo(ZEN3)
    assert zen3 == {"vendor": "AuthenticAMD", "model_name": "AMD EPYC", "family": 25, "model": 1, "isa": ["avx2", "fma"]}
    assert parse_cpuinfo(ZEN4)["isa"] == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert parse_cpuinfo(XEON)["isa"] == list(ISA_FLAGS)  # "avx512f" is not read out of "avx512_bf16"
    assert parse_cpuinfo("") == {"vendor": None, "model_name": None, "family": None, "model": None, "isa": None}


def test_the_table_line_tells_the_three_machines_apart():
    lines = {describe({"cpu": parse_cpuinfo(text), "cpu_count": 2}) for text in (ZEN3, ZEN4, XEON)}
    assert lines == {"AMD EPYC (family 25, model 1), 2 cores, AVX2 FMA, no AVX-512",
                     "AMD EPYC (family 25, model 17), 2 cores, AVX2 FMA AVX512F AVX512-VNNI AVX512-BF16",
                     "Intel(R) Xeon(R) Platinum (family 6, model 143), 2 cores, "
                     "AVX2 FMA AVX512F AVX512-VNNI AVX512-BF16 AMX-TILE AMX-BF16"}
    assert describe({"cpu": parse_cpuinfo(""), "cpu_count": 2}) == "CPU unknown, 2 cores"


def test_this_machine_is_described_and_old_results_still_render():
    here = machine(threads=2)
    assert here["cpu"] == cpu() and here["threads"] == 2 and here["torch"] and here["onnxruntime"]
    assert here["cpu"]["isa"] is not None and here["cpu"]["vendor"]  # CI and this machine are Linux x86
    json.dumps(here)  # it goes into the JSON as it is
    assert describe(here).startswith(here["cpu"]["model_name"])
    r = {"machine": here, "gemm_peak_gflops": 150.0, "activation_block_us": 200.0, "planning": [], "update": []}
    assert core.format_table(r).splitlines()[0] == f"Machine: {describe(here)}"
    assert loop.format_table({"machine": here}).splitlines()[0] == f"Machine: {describe(here)}"
    old = json.loads((REPO / "benchmark" / "results" / "core_intel_s6_2026-11-29.json").read_text())
    assert core.format_table(old).splitlines()[0] == "Machine: CPU unknown, 2 cores"
