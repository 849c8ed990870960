"""Where a CPU training step spends its time: torch profiler self-times of one ``amp`` training step (16 patches,
Table-1 or demo width), grouped into convolutions, casts, zero fills, ReLU, max-pool and Adam, with and without the
bundle's heap reuse (each in a fresh process, since the setting is process-wide), plus minor page faults per step.

Usage (from the repository root)::

    python scripts/profile_training.py [--channels 64 128 256 512] [--steps 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bundle.method.losses import SymmetricRegressionLoss  # noqa: E402
from bundle.method.networks import SymmetricRegressor, VGGRegressor3D  # noqa: E402
from bundle.workflows.memory import reuse_heap_memory  # noqa: E402
from bundle.workflows.setup import autocast_dtype, prepare_network  # noqa: E402

GROUPS = {
    "convolution forward": ("aten::mkldnn_convolution",),
    "convolution backward": ("aten::convolution_backward",),
    "zero fills": ("aten::fill_", "aten::zero_"),
    "casts and layout copies": ("aten::copy_",),
    "ReLU forward + backward": ("aten::threshold_backward", "aten::clamp_min_", "aten::clamp_min", "aten::relu_"),
    "max-pool forward + backward": ("aten::max_pool3d_with_indices", "aten::max_pool3d_with_indices_backward"),
    "Adam": ("aten::_foreach_", "aten::sqrt", "aten::addcdiv_", "aten::addcmul_", "aten::lerp_", "aten::mul_",
             "aten::add_", "aten::div_"),
}  # fmt: skip
"""Profiler op names per group (Adam also takes every ``_foreach_`` op); the rest is reported as ``other``."""


def grouped_step_ms(channels: list[int], steps: int, reuse: bool) -> dict[str, float]:
    """Milliseconds per training step in each group, the step's total and its minor page faults."""
    if reuse:
        reuse_heap_memory("cpu")
    torch.manual_seed(0)
    network = prepare_network(VGGRegressor3D(channels=channels), "cpu", amp=True)
    model = SymmetricRegressor(network, autocast_dtype=autocast_dtype(True, "cpu")).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = SymmetricRegressionLoss()
    pairs, target = torch.rand(8, 2, 50, 50, 20) + 0.5, torch.rand(8, 2)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(pairs), target).backward()
        optimizer.step()

    for _ in range(3):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):  # faults counted without the profiler, whose own buffers would add to them
        step()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    result = {"total": sum(e.self_cpu_time_total for e in events) / steps / 1e3}
    for group, names in GROUPS.items():
        in_group = [e for e in events if e.key in names or (group == "Adam" and e.key.startswith("aten::_foreach_"))]
        result[group] = sum(e.self_cpu_time_total for e in in_group) / steps / 1e3
    result["other"] = result["total"] - sum(result[g] for g in GROUPS)
    result["minor page faults"] = faults
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", choices=["default", "reuse"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(grouped_step_ms(args.channels, args.steps, args.child == "reuse")))
        return
    results = {}
    for mode in ("default", "reuse"):
        cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--channels",
               *map(str, args.channels)]  # fmt: skip
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    print(f"{'ms per step (16 patches)':<30} {'glibc default':>14} {'heap reuse':>11}")
    for key in results["default"]:
        print(f"{key:<30} {results['default'][key]:>14.0f} {results['reuse'][key]:>11.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"channels": args.channels, **results}, indent=2))


if __name__ == "__main__":
    main()
