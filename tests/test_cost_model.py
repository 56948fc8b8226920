"""The Dataflow cost projection: its arithmetic, on a fixed measurement."""

from __future__ import annotations

import pytest

from benchmarks import cost_model

MEASURED = {
    "cpu_seconds_per_megapixel": {"read": 0.01, "hash": 0.01, "decode": 0.08, "models": 1.9},
    "total_cpu_seconds_per_megapixel": 2.0,
    "code_bytes_per_megapixel": 100_000,
    "clean_bytes_per_megapixel": 1_000_000,
}


def options(*flags: str):
    base = ["--images", "1000000", "--megapixels", "10", "--workers", "10"]
    return cost_model.build_parser().parse_args([*base, *flags])


def test_projection_follows_images_pixels_and_workers():
    args = options("--pipeline-overhead", "1.0")
    night = cost_model.project(MEASURED, args, 20_000)
    # 20,000 images x 10 MP x 2 CPU s/MP = 400,000 CPU s = 111.1 vCPU hours on 4-vCPU workers
    assert night["vcpu_hours"] == pytest.approx(111.1, abs=0.1)
    assert night["worker_hours"] == pytest.approx(27.8, abs=0.1)
    assert night["wall_hours_on_workers"] == pytest.approx(2.78, abs=0.01)
    assert night["workers_to_finish_in_8_hours"] == 4
    assert night["bytes_written_tb"] == pytest.approx(20_000 * 10 * 1.1e6 / 1e12, rel=1e-3)
    double = cost_model.project(MEASURED, args, 40_000)
    assert double["usd"]["vcpu"] == pytest.approx(2 * night["usd"]["vcpu"], rel=1e-2)
    faster = options("--pipeline-overhead", "1.0", "--vcpu-speed", "2")
    assert cost_model.project(MEASURED, faster, 20_000)["vcpu_hours"] == pytest.approx(
        night["vcpu_hours"] / 2, abs=0.1
    )


def test_gpu_break_even_speedup_makes_a_gpu_worker_cost_the_same():
    args = options()
    gpu = cost_model.gpu_break_even(MEASURED, args)
    share, ratio, speedup = (
        gpu["network_share_of_cpu"],
        gpu["gpu_worker_price_ratio"],
        gpu["break_even_network_speedup"],
    )
    assert share == pytest.approx(0.95)
    throughput_gain = 1 / ((1 - share) + share / speedup)
    assert throughput_gain == pytest.approx(ratio, rel=0.02)
    # When the CPU-only part alone costs more than the price ratio allows, no GPU pays.
    cpu_bound = dict(
        MEASURED, cpu_seconds_per_megapixel=dict(MEASURED["cpu_seconds_per_megapixel"], models=0.2)
    )
    assert cost_model.gpu_break_even(cpu_bound, args)["break_even_network_speedup"] is None
