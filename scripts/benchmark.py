"""Speed and memory of the bundle: training/inference throughput (fp32 vs the ``amp`` path), symmetric MC latency
(fast vs naive), peak RSS of a real inference run, and on CUDA model FLOPs / MFU and the paper protocol's wall time.

Ratios are measured in one process, alternating the two variants after a warm-up, so that slow drifts of the
machine affect both alike. Prints a table and writes JSON (``--json PATH``) with at least ``cpu_train_speedup``,
``cpu_infer_speedup``, ``mc100_over_det`` and ``infer_peak_rss_mb``.

Usage (from the repository root)::

    python scripts/benchmark.py [--quick] [--json runs/benchmark.json] [--device cpu|cuda] [--no-compile]

The ``torch.compile`` variants are measured too (training: the trainer's ``compile`` option, which compiles the
paired model; inference: the inference configs' ``compile``, frozen-weight compilation of the features), with
their one-off compile times, so that each device's default can be chosen by measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bundle.method.losses import SymmetricRegressionLoss  # noqa: E402
from bundle.method.networks import SymmetricRegressor, VGGRegressor3D  # noqa: E402
from bundle.workflows.cpu import cpu_supports_bf16  # noqa: E402
from bundle.workflows.memory import reuse_heap_memory  # noqa: E402
from bundle.workflows.setup import autocast_dtype, cuda_amp_dtype, prepare_network  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
"""Dense bf16 tensor-core peaks (TFLOP/s) used for MFU; unknown GPUs report no MFU."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paired_model(device: torch.device, amp: bool, inference: bool = False, compile: bool = False,
                 backend: str = "torch", channels: Sequence[int] = (64, 128, 256, 512),
                 standardise_input: bool = False) -> SymmetricRegressor:  # fmt: skip
    """The paired model (Table 1 unless ``channels`` says otherwise) as the bundle's training (or, with
    ``inference``, inference) configs build it."""
    torch.manual_seed(0)
    net = VGGRegressor3D(channels=channels, standardise_input=standardise_input)
    net = prepare_network(net, device, amp, inference=inference, compile=compile, backend=backend)
    dtype = autocast_dtype(amp, device) if device.type == "cpu" else (cuda_amp_dtype() if amp else None)
    return SymmetricRegressor(net, autocast_dtype=dtype)


def alternate_times(
    variants: dict[str, Callable[[], None]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of every call of each variant, calls interleaved A, B, A, B, ... after one warm-up call each."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def alternate(variants: dict[str, Callable[[], None]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each variant, calls interleaved (``alternate_times``)."""
    return {name: statistics.median(values) for name, values in alternate_times(variants, repeats, device).items()}


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call (e.g. the first call of a compiled function, which compiles it)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def train_step_fn(model: nn.Module, pairs: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    """One optimisation step as the trainer runs it (``model`` may be a ``torch.compile`` of the paired model)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = SymmetricRegressionLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(pairs), target).backward()
        optimizer.step()

    model.train()
    return step


def infer_fn(model: nn.Module, pairs: torch.Tensor) -> Callable[[], None]:
    def forward() -> None:
        with torch.no_grad():
            model(pairs)

    return forward


def bench_throughput(device: torch.device, pairs_per_batch: int, repeats: int, compile: bool) -> dict[str, float]:
    """Training and inference patches/s of plain fp32 vs the amp path (and, with ``compile``, amp + compile)."""
    pairs = torch.rand(pairs_per_batch, 2, 50, 50, 20, device=device) + 0.5
    target = torch.rand(pairs_per_batch, 2, device=device)
    patches = 2 * pairs_per_batch
    train_variants = {"fp32": train_step_fn(paired_model(device, amp=False), pairs, target),
                      "amp": train_step_fn(paired_model(device, amp=True), pairs, target)}  # fmt: skip
    infer_variants = {"fp32": infer_fn(paired_model(device, amp=False).eval(), pairs),
                      "amp": infer_fn(paired_model(device, amp=True, inference=True).eval(), pairs)}  # fmt: skip
    result: dict[str, float] = {}
    if compile:  # the trainer's compile option compiles the paired model; inference compiles the features
        train_variants["amp_compiled"] = train_step_fn(torch.compile(paired_model(device, amp=True)), pairs, target)
        infer_variants["amp_compiled"] = infer_fn(paired_model(device, amp=True, inference=True, compile=True), pairs)
        result["train_compile_s"] = timed(train_variants["amp_compiled"], device)
        result["infer_compile_s"] = timed(infer_variants["amp_compiled"], device)
    train = alternate(train_variants, repeats, device)
    infer = alternate(infer_variants, repeats, device)
    for name in train:
        result[f"train_patches_per_s_{name}"] = patches / train[name]
        result[f"infer_patches_per_s_{name}"] = patches / infer[name]
    result["train_speedup"] = train["fp32"] / train["amp"]
    result["infer_speedup"] = infer["fp32"] / infer["amp"]
    if compile:
        result["train_speedup_compiled"] = train["fp32"] / train["amp_compiled"]
        result["infer_speedup_compiled"] = infer["fp32"] / infer["amp_compiled"]
    return result


def bench_mc(
    device: torch.device, n_samples: int, repeats: int, naive: bool, backend: str = "torch"
) -> dict[str, float]:
    """Latency of one patient pair: deterministic forward, fast symmetric MC (n samples) and n naive passes.

    The deterministic and the fast call alternate over at least 21 rounds (a pair forward is ~0.1 s on a CPU) and
    their ratio is the median of the per-round ratios, which cancels slow drifts of the machine; the naive passes
    (n full forwards per call) are timed apart, ``repeats`` times."""
    model = paired_model(device, amp=True, inference=True, backend=backend).eval()
    pair = torch.rand(1, 2, 50, 50, 20, device=device) + 0.5

    def deterministic() -> None:
        with torch.no_grad():
            model(pair)

    def fast_mc() -> None:
        with torch.no_grad():
            model.mc_forward(pair, n_samples)

    times = alternate_times({"det": deterministic, "fast": fast_mc}, max(repeats, 21), device)
    det, fast = statistics.median(times["det"]), statistics.median(times["fast"])
    ratio = statistics.median(f / d for f, d in zip(times["fast"], times["det"], strict=True))
    result = {"det_pair_ms": 1e3 * det, "mc_fast_pair_ms": 1e3 * fast, f"mc{n_samples}_over_det": ratio}
    if naive:

        def naive_mc() -> None:
            model.train()  # dropout on; no other layer behaves differently in training mode
            with torch.no_grad():
                for _ in range(n_samples):
                    model(pair)
            model.eval()

        seconds = alternate({"naive": naive_mc}, repeats, device)["naive"]
        result |= {"mc_naive_pair_ms": 1e3 * seconds, "mc_naive_over_fast": seconds / fast}
    return result


def train_step_child(mode: str, pairs_per_batch: int, repeats: int) -> None:
    """In a fresh process (glibc malloc settings are process-wide): print the amp training step's patches/s and
    minor page faults per step, with (``mode="reuse"``) or without the bundle's heap reuse."""
    import resource

    if mode == "reuse":
        reuse_heap_memory("cpu")
    device = torch.device("cpu")
    pairs = torch.rand(pairs_per_batch, 2, 50, 50, 20) + 0.5
    step = train_step_fn(paired_model(device, amp=True), pairs, torch.rand(pairs_per_batch, 2))
    for _ in range(2):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    seconds = (time.perf_counter() - start) / repeats
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeats
    print(json.dumps({"patches_per_s": 2 * pairs_per_batch / seconds, "faults_per_step": faults}))


def bench_heap_reuse(pairs_per_batch: int, repeats: int) -> dict[str, float]:
    """CPU training patches/s and page faults per step without and with ``bundle.workflows.memory`` heap reuse
    (each in its own process, run twice in turn A, B, A, B; the better run of each counts)."""
    runs: dict[str, list[dict[str, float]]] = {"no_heap_reuse": [], "heap_reuse": []}
    for _ in range(2):
        for name, mode in (("no_heap_reuse", "default"), ("heap_reuse", "reuse")):
            cmd = [sys.executable, __file__, "--train-step-child", mode, "--repeats", str(repeats)]
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    result: dict[str, float] = {}
    for name, values in runs.items():
        best = max(values, key=lambda run: run["patches_per_s"])
        result[f"train_patches_per_s_amp_{name}"] = best["patches_per_s"]
        result[f"train_faults_per_step_{name}"] = best["faults_per_step"]
    result["heap_reuse_train_speedup"] = (
        result["train_patches_per_s_amp_heap_reuse"] / result["train_patches_per_s_amp_no_heap_reuse"]
    )
    return result


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def bench_peers(pairs_per_batch: int, repeats: int, compile: bool,
                channels: Sequence[int] = (64, 128, 256, 512)) -> tuple[dict[str, object], list[str]]:  # fmt: skip
    """Patches/s of the bundle's CPU inference backends (``torch``, ``openvino``; ``auto`` is one of them) and of
    every peer runtime on the same batch of the network of ``channels``, alternating; the matrix-multiply peaks and
    each path's fraction of the bf16 peak."""
    from benchmark_peers import conv_gflop_per_patch, matmul_gflops, peer_forwards

    from bundle.workflows.backends import resolve_backend

    cpu = torch.device("cpu")
    pairs = torch.rand(pairs_per_batch, 2, 50, 50, 20) + 0.5
    patches = pairs.reshape(-1, 1, 50, 50, 20)
    torch.manual_seed(0)
    network = VGGRegressor3D(channels=channels)  # the weights paired_model() builds too
    variants = {"infer_torch": infer_fn(paired_model(cpu, amp=True, inference=True, channels=channels).eval(), pairs)}
    if compile:
        variants["infer_torch_compiled"] = infer_fn(
            paired_model(cpu, True, inference=True, compile=True, channels=channels), pairs
        )
    if openvino_installed():
        variants["infer_openvino"] = infer_fn(
            paired_model(cpu, True, inference=True, backend="openvino", channels=channels), pairs
        )
    peers, notes = peer_forwards(network, patches)
    times = alternate({**variants, **peers}, repeats, cpu)
    result: dict[str, object] = {f"{name}_patches_per_s": patches.shape[0] / t for name, t in times.items()}
    auto = resolve_backend("auto", cpu, network)
    result["inference_backend_auto"] = auto
    result["infer_patches_per_s"] = result[f"infer_{auto}_patches_per_s"]
    fastest = min(times, key=times.get)
    result["fastest"] = fastest
    result["auto_over_fastest"] = times[fastest] / times[f"infer_{auto}"]
    result["gflop_per_patch"] = conv_gflop_per_patch(network)
    # bf16 GEMM where the CPU has it natively (emulated, one 2048^2 product takes minutes on one core)
    result["matmul_bf16_gflops"] = matmul_gflops(torch.bfloat16) if cpu_supports_bf16() else None
    result["matmul_fp32_gflops"] = matmul_gflops(torch.float32)
    peak = result["matmul_bf16_gflops"] or result["matmul_fp32_gflops"]
    for name in times:  # against the fastest native GEMM of this CPU
        result[f"{name}_fraction_of_peak"] = result[f"{name}_patches_per_s"] * result["gflop_per_patch"] / peak
    return result, notes


def bench_quick_start(repeats: int) -> dict[str, float]:
    """The README quick start's training arithmetic on this CPU: its total training TFLOP (a step counted as 3 x
    the forward FLOPs: forward, and a backward of twice its cost), a timed training step of it (demo width, its
    batch, the amp path as the CPU allows) as achieved GFLOP/s, and that as a fraction of the float32 GEMM peak."""
    from benchmark_peers import conv_gflop_per_patch, matmul_gflops
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO / "configs" / "train.json"), str(REPO / "configs" / "quick_start.json")])
    channels, epochs, batch = parser["network_def"]["channels"], parser["num_epochs"], parser["batch_size"]
    datalist = REPO / "data" / "demo" / "datalist.json"
    n_train = len(json.loads(datalist.read_text())["training"]) if datalist.exists() else 257  # the demo split
    cpu = torch.device("cpu")
    gflop = conv_gflop_per_patch(VGGRegressor3D(channels=channels))
    patches_per_epoch = (n_train // batch) * batch * 2
    pairs = torch.rand(batch, 2, 50, 50, 20) + 0.5
    model = paired_model(cpu, amp=True, channels=channels, standardise_input=parser["standardise_input"])
    seconds = alternate({"step": train_step_fn(model, pairs, torch.rand(batch, 2))}, max(repeats, 10), cpu)["step"]
    achieved = 3 * gflop * 2 * batch / seconds
    peak = matmul_gflops(torch.float32)
    return {
        "quick_start_train_tflop": 3 * gflop * patches_per_epoch * epochs / 1e3,
        "quick_start_epochs": float(epochs),
        "quick_start_gflop_per_patch": gflop,
        "quick_start_train_gflops": achieved,
        "matmul_fp32_gflops": peak,
        "quick_start_fraction_of_fp32_peak": achieved / peak,
        "quick_start_train_min_estimate": 3 * gflop * patches_per_epoch * epochs / achieved / 60,
    }


def bench_inference_rss(n_patients: int, mc_samples: int, backends: Sequence[str]) -> dict[str, float]:
    """Peak resident memory of a real ``configs/inference.json`` run per backend (Table-1 network, random weights)."""
    from bundle.synthetic.smwi_cohort import generate_cohort

    with tempfile.TemporaryDirectory() as tmp:
        cohort = generate_cohort(Path(tmp) / "cohort", n_patients=n_patients, seed=5, num_workers=1, progress=False)
        ckpt = Path(tmp) / "model.pt"
        torch.save(VGGRegressor3D().state_dict(), ckpt)
        # The child reports its own high-water mark (VmHWM): Linux carries ru_maxrss over fork and exec, so the
        # parent's size would be a floor. The bench extra's TensorFlow stays out of the child, as in an environment
        # without that extra: monai.visualize imports torch.utils.tensorboard, whose tensorboard loads TensorFlow
        # (~430 MB) unless its own no-TensorFlow marker module exists.
        child = (
            "import atexit, runpy, sys, types; sys.modules['tensorboard.compat.notf'] = types.ModuleType('notf'); "
            "atexit.register(lambda: print('VmHWM', open('/proc/self/status').read().split('VmHWM:')[1].split()[0], "
            "file=sys.stderr)); runpy.run_module('bundle', run_name='__main__')"
        )
        cmd = [
            sys.executable, "-c", child, "run", "inference", "--config_file", "configs/inference.json",
            "--dataset_dir", str(cohort.parent), "--ckpt_path", str(ckpt), "--output_dir", str(Path(tmp) / "out"),
            "--mc_samples", str(mc_samples), "--reports", "false", "--section", "training",
        ]  # fmt: skip
        result: dict[str, float] = {"infer_run_cases": n_patients}
        for backend in backends:
            suffix = "" if backend == "torch" else f"_{backend}"
            start = time.perf_counter()
            run = subprocess.run([*cmd, "--inference_backend", backend], cwd=REPO, capture_output=True, text=True)
            result[f"infer_run_s{suffix}"] = time.perf_counter() - start
            if run.returncode != 0:
                raise RuntimeError(f"inference ({backend}) failed: {run.stderr[-2000:]}")
            peak_kb = [line.split()[1] for line in run.stderr.splitlines() if line.startswith("VmHWM ")][-1]
            result[f"infer_peak_rss_mb{suffix}"] = int(peak_kb) / 1024
    return result


def bench_localisation(repeats: int) -> dict[str, float]:
    """Seconds to localise both nigrosomes in one wide-field volume (104 x 104 x 36 mm at 0.5 x 0.5 x 1 mm), as
    automatic centroids do: read the NIfTI, RAS, resample, sliding-window heat maps with mirror averaging, decode
    (default localiser size, random weights: the time does not depend on them). Median of ``repeats`` after one
    warm-up."""
    import nibabel as nib
    from monai.transforms import Compose

    from bundle.localiser.centroids import localiser_loading
    from bundle.localiser.model import NigrosomeLocaliser, mirror_averaged
    from bundle.localiser.pipeline import locate, sliding_window
    from bundle.synthetic.smwi_model import WIDE_FIELD
    from bundle.synthetic.smwi_phantom import simulate_subject

    subject = simulate_subject(3.0, 3.0, np.random.default_rng(0), WIDE_FIELD)
    localiser = NigrosomeLocaliser().eval()
    prepare, inferer = Compose(localiser_loading(localiser.spacing)), sliding_window(localiser.roi)
    network = mirror_averaged(localiser)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wide.nii.gz"
        nib.save(nib.Nifti1Image(subject.volume, subject.affine), path)
        for _ in range(repeats + 1):
            start = time.perf_counter()
            image = prepare({"image": str(path)})["image"]
            with torch.no_grad():
                heatmaps = inferer(image[None], network)[0]
            locate(heatmaps, image.affine, image.meta["original_affine"])
            times.append(time.perf_counter() - start)
    return {"localise_s_per_volume": float(np.median(times[1:]))}


def bench_explain(n_cases: int = 10) -> dict[str, float]:
    """Seconds for the explain step on ``n_cases`` slab cases at the demo width (16-32-64-128): HiResCAM, LRP and
    full-gradient maps of both patches, NIfTI files and the PNG panel of each case (random weights: the time does
    not depend on them)."""
    import nibabel as nib
    from monai.transforms import Compose

    from bundle.constants import DEFAULT_SBR_MAX
    from bundle.data import DivideByMeand, LoadNigralPatchesd
    from bundle.explain.explainer import Explainer
    from bundle.method.networks import VGGRegressor3D
    from bundle.synthetic.smwi_phantom import simulate_subject

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for i in range(n_cases):
            s = simulate_subject(3.0, 3.0, rng)
            path = Path(tmp) / f"S{i}.nii.gz"
            nib.save(nib.Nifti1Image(s.volume, s.affine), path)
            centroids = {"centroid_right": s.centroid_right.tolist(), "centroid_left": s.centroid_left.tolist()}
            cases.append({"id": f"S{i}", "image": str(path), "centroid_space": "voxel", **centroids})
        load = Compose([LoadNigralPatchesd(), DivideByMeand(keys=["patch_right", "patch_left"])])
        network = VGGRegressor3D(channels=(16, 32, 64, 128))
        start = time.perf_counter()
        Explainer(network, load, cases, Path(tmp) / "out", DEFAULT_SBR_MAX).run()
        return {"explain_s_per_10_cases": (time.perf_counter() - start) * 10 / n_cases}


def bench_cuda_flops(device: torch.device, pairs_per_batch: int, repeats: int) -> dict[str, float | None]:
    """Training FLOPs per patch (torch.utils.flop_counter), achieved TFLOP/s and MFU of the amp path."""
    from torch.utils.flop_counter import FlopCounterMode

    model = paired_model(device, amp=True)
    pairs = torch.rand(pairs_per_batch, 2, 50, 50, 20, device=device) + 0.5
    step = train_step_fn(model, pairs, torch.rand(pairs_per_batch, 2, device=device))
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    seconds = alternate({"amp": step}, repeats, device)["amp"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    achieved = flops / seconds / 1e12
    return {"train_gflop_per_patch": flops / (2 * pairs_per_batch) / 1e9, "train_tflops": achieved,
            "mfu": achieved / peak if peak and device.type == "cuda" else None}  # fmt: skip


def bench_protocol(device: torch.device) -> dict[str, float]:
    """Wall time of the paper protocol (367 pairs, train.json's epochs) with the bundle's own training command."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "bundle", "run", "training", "--config_file", "configs/train.json",
            "--output_dir", tmp, "--ckpt_path", str(Path(tmp) / "model.pt"), "--device", f"$torch.device('{device}')",
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        return {"protocol_wall_s": time.perf_counter() - start}


def bench_bf16_numerics() -> dict[str, float]:
    """The largest relative deviation of the amp path (bf16 autocast, channels_last_3d; and the stored-bf16 inference
    network) from float32 on the full Table-1 network, two patch-like pairs: the full-width version of the test suite's
    ``test_bf16_network_within_1_percent_of_fp32`` (minutes where bf16 is only emulated, so it runs here)."""
    import copy

    torch.manual_seed(0)
    regressor = VGGRegressor3D().eval()
    with torch.no_grad():
        regressor.fc.bias.fill_(0.45)  # a typical normalised SBR, so the deviation is relative to a real output
        pair = torch.rand(2, 2, 50, 50, 20) * 0.4 + 0.8
        ref = SymmetricRegressor(regressor)(pair)
        fast = SymmetricRegressor(regressor.to(memory_format=torch.channels_last_3d), torch.bfloat16)(pair)
        stored = prepare_network(copy.deepcopy(regressor), "cpu", amp=True, inference=True)
        stored_bf16 = SymmetricRegressor(stored, autocast_dtype(True, "cpu"))(pair)
    deviation = max(float(((out - ref).abs() / ref.abs()).max()) for out in (fast, stored_bf16))
    return {"bf16_max_relative_error": deviation}


def bench_pacs(n_studies: int) -> dict[str, float]:
    """The PACS loop (docs/integrations/pacs.md) on ``n_studies`` wide-field synthetic SMWI studies sent one after
    the other to a fresh Orthanc (Debian's package) with the router running beside it as a separate process
    (``python -m apps.pacs route``, 0.5 s polling, the app's default 100 MC samples): per study the seconds from
    the moment Orthanc reports it stable to the moment its SR and PDF are both stored (polled every 0.2 s), the
    router's own peak RSS (``VmHWM``) and the largest Deploy app run's peak RSS (from the router's log)."""
    import re
    import signal

    from apps.pacs.client import OrthancClient
    from apps.pacs.orthanc import start_orthanc, write_config
    from bundle.serving.dicom_pdf import PDF_SERIES_DESCRIPTION
    from bundle.serving.dicom_sr import SR_SERIES_DESCRIPTION
    from bundle.synthetic import smwi_cohort

    sys.path.insert(0, str(REPO / "tests"))
    from subjects import same_study, write_dicom_series  # the test suite's DICOM writers (LPS slices, real geometry)

    user, password, port = "bench", "synthetic-only", 18642
    seconds, app_peaks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        orthanc = start_orthanc(write_config(tmp / "orthanc", port, user, password, stable_age_s=2), tmp / "o.log")
        client = OrthancClient(f"http://127.0.0.1:{port}", (user, password))
        if not client.wait_ready():
            raise RuntimeError(f"Orthanc did not start: {(tmp / 'o.log').read_text()[-2000:]}")
        env = dict(os.environ, ORTHANC_USERNAME=user, ORTHANC_PASSWORD=password, PYTHONPATH=str(REPO))
        log = open(tmp / "router.log", "w")
        router = subprocess.Popen([sys.executable, "-m", "apps.pacs", "route", "--orthanc", client.url, "--state",
                                   str(tmp / "state"), "--interval", "0.5"], cwd=REPO, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        cursor, router_peak_mb = 0, 0.0
        try:
            for index in range(n_studies):
                subject = smwi_cohort.simulate_subject(4.0, 2.5, np.random.default_rng(100 + index),
                                                       smwi_cohort.WIDE_FIELD)  # fmt: skip
                folder = write_dicom_series(tmp / f"study{index}", subject.volume, subject.affine, seed=index,
                                            attributes={"PatientID": f"BENCH-{index}", "PatientName": "BENCH",
                                                        "PatientBirthDate": "19500101", "PatientSex": "O",
                                                        "StudyDate": "20261204", "StudyTime": "090000",
                                                        "StudyID": "1", "AccessionNumber": f"B{index}",
                                                        "ReferringPhysicianName": "",
                                                        "SeriesDescription": "SMWI axial"})  # fmt: skip
                uid = same_study(sorted(folder.glob("*.dcm")))
                for path in sorted(folder.glob("*.dcm")):
                    client.store(path)
                stable_at = stored_at = None
                for _ in range(1500):  # at most 5 min a study
                    now = time.monotonic()
                    if stable_at is None:
                        feed = client.changes(cursor, 1000)
                        cursor = feed["Last"]
                        if any(change["ChangeType"] == "StableStudy" for change in feed["Changes"]):
                            stable_at = now
                    if stable_at is not None:
                        (study,) = [s for s in client.get("/studies")
                                    if client.study(s)["MainDicomTags"]["StudyInstanceUID"] == uid]  # fmt: skip
                        found = {client.series(s)["MainDicomTags"].get("SeriesDescription") for s in
                                 client.study(study)["Series"]}  # fmt: skip
                        if {SR_SERIES_DESCRIPTION, PDF_SERIES_DESCRIPTION} <= found:
                            stored_at = now
                            break
                    if router.poll() is not None or "failed:" in (tmp / "router.log").read_text():
                        raise RuntimeError(f"study {index}: " + (tmp / "router.log").read_text()[-2000:])
                    status = Path(f"/proc/{router.pid}/status").read_text()
                    router_peak_mb = max(router_peak_mb, int(re.search(r"VmHWM:\s+(\d+)", status)[1]) / 1024)
                    time.sleep(0.2)
                if stored_at is None:
                    raise RuntimeError(f"study {index}: no SR within 5 min; see {tmp / 'router.log'}")
                seconds.append(stored_at - stable_at)
        finally:
            for process in (router, orthanc):
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=60)
            log.close()
        app_peaks = [
            float(m) for m in re.findall(r"peak RSS of app runs so far (\d+) MB", (tmp / "router.log").read_text())
        ]
    return {"pacs_studies": n_studies, "pacs_stable_to_stored_median_s": statistics.median(seconds),
            "pacs_stable_to_stored_min_s": min(seconds), "pacs_stable_to_stored_max_s": max(seconds),
            "pacs_router_peak_rss_mb": router_peak_mb,
            "pacs_app_peak_rss_mb": max(app_peaks, default=float("nan"))}  # fmt: skip


def cpu_description() -> str:
    """The CPU model and its bf16 / AMX flags, as ``lscpu`` reports them (for the record beside every figure)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    extras = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} CPUs, {' '.join(extras) or 'no AVX2'}"


def backend_comparison(repeats: int, compile: bool, json_path: str | None) -> None:
    """``--peers-only``: the CPU inference backends and peer runtimes at Table-1 and demo width, same batch, same
    run, and the quick start's training arithmetic; a table, and JSON with one block per width."""
    results: dict[str, object] = {"cpu": cpu_description(), "torch": torch.__version__,
                                  "threads": torch.get_num_threads(), "isa_variables": {
                                      k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
                                      if k in os.environ}}  # fmt: skip
    print(f"backend comparison on {results['cpu']} ({results['threads']} threads)", flush=True)
    for width, channels in (("table1", (64, 128, 256, 512)), ("demo", (16, 32, 64, 128))):
        peers, notes = bench_peers(8, repeats, compile, channels=channels)
        results[width] = peers
        print(f"-- {width} width {channels}, batch of 8 pairs: patches/s (auto = {peers['inference_backend_auto']})")
        for name in sorted(k.removesuffix("_patches_per_s") for k in peers if k.endswith("_patches_per_s")
                           and k != "infer_patches_per_s"):  # fmt: skip
            print(f"   {name:<28} {peers[f'{name}_patches_per_s']:10.2f}")
        print(f"   auto / fastest ({peers['fastest']}): {peers['auto_over_fastest']:.3f}")
        for note in notes:
            print(f"   {note}")
    quick = bench_quick_start(repeats)
    results["quick_start"] = quick
    q = quick
    print(f"-- quick start: {q['quick_start_train_tflop']:.1f} TFLOP of training ({q['quick_start_epochs']:.0f} "
          f"epochs); a step runs at {q['quick_start_train_gflops']:.1f} GFLOP/s = "
          f"{q['quick_start_fraction_of_fp32_peak']:.2f} x the float32 GEMM peak ({q['matmul_fp32_gflops']:.1f} "
          f"GFLOP/s): ~{q['quick_start_train_min_estimate']:.1f} min of training")  # fmt: skip
    if json_path:
        from bundle.io import write_json

        write_json(json_path, results)
        print(f"wrote {json_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and samples (< 5 min on a 2-core CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--protocol", action="store_true", help="CUDA: also time the full paper protocol")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument(
        "--peers", action="store_true", help="CPU: also time the runtimes users could pick (bench extra), matmul peaks"
    )
    parser.add_argument(
        "--peers-only",
        action="store_true",
        help="CPU: only the backend comparison (Table-1 and demo width) and the quick start's arithmetic (minutes)",
    )
    parser.add_argument(
        "--pacs", type=int, metavar="N", help="only the PACS loop: N studies through Orthanc and the router"
    )
    parser.add_argument("--train-step-child", choices=["default", "reuse"], help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    pairs_per_batch = 8  # configs/train.json's batch size (pairs): 16 patches per step
    if args.train_step_child:
        train_step_child(args.train_step_child, pairs_per_batch, args.repeats)
        return
    repeats = 3 if args.quick else 7
    if args.peers_only:
        backend_comparison(max(repeats, 5), compile=not args.no_compile, json_path=args.json)
        return
    if args.pacs:
        pacs = {"cpu": cpu_description(), **bench_pacs(args.pacs)}
        print(json.dumps(pacs, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(pacs, indent=2) + "\n")
        return

    results: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
        "network": "Table 1 (64-128-256-512)", "pairs_per_batch": pairs_per_batch,
    }  # fmt: skip
    print(f"benchmarking on {results['device']} ({results['threads']} threads), Table-1 network ...", flush=True)
    # first, before this process fills the CPU caches and heap
    rss_backends = ["torch", "openvino"] if device.type == "cpu" and openvino_installed() else ["torch"]
    rss = bench_inference_rss(n_patients=55, mc_samples=100, backends=rss_backends)  # the demo test split's size
    heap = bench_heap_reuse(pairs_per_batch, repeats) if device.type == "cpu" else {}
    results["heap_reuse"] = reuse_heap_memory(device)  # as the bundle's workflows do
    throughput = bench_throughput(device, pairs_per_batch, repeats, compile=not args.no_compile)
    backend = "openvino" if args.peers and device.type == "cpu" and openvino_installed() else "torch"
    mc = bench_mc(device, 100, repeats, naive=True, backend=backend)
    notes: list[str] = []
    if args.peers and device.type == "cpu":
        # at least 5 rounds: 8 runtimes alternate, and one slow call among 3 moved a median by 20 %
        peers, notes = bench_peers(pairs_per_batch, max(repeats, 5), compile=not args.no_compile)
        results |= peers
    results["mc_backend"] = backend
    localisation = bench_localisation(repeats)
    explain = bench_explain()
    results |= throughput | mc | rss | localisation | explain | heap
    if device.type == "cpu":
        results |= bench_bf16_numerics()  # Table-1 width; the test suite checks a quarter width
    results["train_patches_per_s"] = throughput["train_patches_per_s_amp"]
    if results.get("matmul_bf16_gflops"):  # a training step counted as 3 x the forward FLOPs
        results["train_fraction_of_bf16_peak"] = (
            3 * results["train_patches_per_s"] * results["gflop_per_patch"] / results["matmul_bf16_gflops"]
        )
    if args.peers:
        results["cpu"] = cpu_description()
    prefix = "cpu" if device.type == "cpu" else "cuda"
    results[f"{prefix}_train_speedup"] = throughput["train_speedup"]
    results[f"{prefix}_infer_speedup"] = throughput["infer_speedup"]
    if not args.no_compile:
        results[f"{prefix}_train_speedup_compiled"] = throughput["train_speedup_compiled"]
        results[f"{prefix}_infer_speedup_compiled"] = throughput["infer_speedup_compiled"]
    if device.type == "cuda":
        results |= bench_cuda_flops(device, pairs_per_batch, repeats)
        if args.protocol:
            results |= bench_protocol(device)

    rows = [
        ("training patches/s, fp32", throughput["train_patches_per_s_fp32"]),
        ("training patches/s, amp path", throughput["train_patches_per_s_amp"]),
        ("training speed-up (amp / fp32)", throughput["train_speedup"]),
        ("inference patches/s, fp32", throughput["infer_patches_per_s_fp32"]),
        ("inference patches/s, amp path", throughput["infer_patches_per_s_amp"]),
        ("inference speed-up (amp / fp32)", throughput["infer_speedup"]),
    ]
    if not args.no_compile:
        rows += [
            ("training patches/s, amp + compile", throughput["train_patches_per_s_amp_compiled"]),
            ("training speed-up (amp + compile / fp32)", throughput["train_speedup_compiled"]),
            ("training compile time (first step), s", throughput["train_compile_s"]),
            ("inference patches/s, amp + compile", throughput["infer_patches_per_s_amp_compiled"]),
            ("inference speed-up (amp + compile / fp32)", throughput["infer_speedup_compiled"]),
            ("inference compile time (first batch), s", throughput["infer_compile_s"]),
        ]
    rows += [
        ("deterministic pair forward, ms", mc["det_pair_ms"]),
        ("symmetric MC n=100 per pair (fast), ms", mc["mc_fast_pair_ms"]),
        ("symmetric MC n=100 per pair (naive), ms", mc["mc_naive_pair_ms"]),
        ("MC n=100 / deterministic", mc["mc100_over_det"]),
        ("inference peak RSS (55 patients, MC n=100), MB", rss["infer_peak_rss_mb"]),
        *((f"  same, {b} backend, MB", rss[f"infer_peak_rss_mb_{b}"]) for b in rss_backends if b != "torch"),
        *(
            (f"training patches/s, amp, {k.removeprefix('train_patches_per_s_amp_')}", v)
            for k, v in heap.items()
            if k.startswith("train_patches_per_s_amp_")
        ),
        *(
            (f"training page faults per step, {k.removeprefix('train_faults_per_step_')}", v)
            for k, v in heap.items()
            if k.startswith("train_faults_per_step_")
        ),
        ("localisation of one wide-field volume, s", localisation["localise_s_per_volume"]),
        ("explain 10 cases (3 methods, demo width), s", explain["explain_s_per_10_cases"]),
    ]
    if device.type == "cuda":
        rows += [("training GFLOP per patch", results["train_gflop_per_patch"]),
                 ("training TFLOP/s", results["train_tflops"]), ("MFU", results["mfu"])]  # fmt: skip
    if args.peers and device.type == "cpu":
        rows += [(f"{name} patches/s", results[f"{name}_patches_per_s"]) for name in
                 sorted(k.removesuffix("_patches_per_s") for k in results if k.endswith("_patches_per_s")
                        and k.startswith(("infer_", "peer_")) and k != "infer_patches_per_s")]  # fmt: skip
        rows += [("GFLOP per patch (forward)", results["gflop_per_patch"]),
                 ("matmul bf16 GFLOP/s", results["matmul_bf16_gflops"]),
                 ("matmul fp32 GFLOP/s", results["matmul_fp32_gflops"])]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {'n/a' if value is None else f'{value:10.2f}'}")
    for note in notes:
        print(note)
    if args.json:
        from bundle.io import write_json

        write_json(args.json, results)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
