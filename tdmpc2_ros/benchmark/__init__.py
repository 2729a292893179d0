"""Benchmarks (speed and memory), published in docs/benchmarks.md. Not tests: nothing here asserts."""

from tdmpc2_ros.benchmark.core import run_core_benchmark

__all__ = ["run_core_benchmark"]
