"""CPU heap reuse (bundle.workflows.memory): freed tensor memory is reused instead of page-faulted in afresh."""

import subprocess
import sys

import pytest

from bundle.workflows.memory import reuse_heap_memory

# a fresh process: mallopt settings are process-wide and cannot be undone
STEADY_STATE_FAULTS = """
import resource, sys, torch
from bundle.workflows.memory import reuse_heap_memory
applied = reuse_heap_memory("cpu") if sys.argv[1] == "reuse" else False
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 1, 3, padding=1))
x = torch.rand(4, 1, 64, 64, 64)  # 32 MB activations per layer, above glibc's largest mmap threshold
faults = []
for step in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x).mean().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sorted(faults[2:])[4])  # the median step after two warm-up steps
"""


def steady_state_faults(mode: str) -> tuple[bool, int]:
    """Whether the setting was applied, and the minor page faults of a steady-state training step (the median of
    steps 3-10: now and then a step still grows the heap by one activation, when the freed blocks do not fit)."""
    out = subprocess.run([sys.executable, "-c", STEADY_STATE_FAULTS, mode], capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_training_steps_reuse_their_memory_instead_of_faulting_it_in_again():
    applied, faults = steady_state_faults("reuse")
    assert applied
    assert faults < 500  # the step's ~100 MB of tensors come from pages already mapped
    default_applied, default_faults = steady_state_faults("default")
    assert not default_applied
    assert default_faults > 20_000  # glibc's default maps (and zero-fills) them afresh at every step


def test_gpu_devices_are_left_alone():
    assert reuse_heap_memory("cuda:0") is False
    assert reuse_heap_memory("meta") is False
