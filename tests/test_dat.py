"""The companion DaT bundles: the synthetic DaT cohort, the two networks, LRP / full-gradient on them, the binding
ratios, and each bundle's workflows end to end on a tiny cohort."""

import json
import subprocess
import sys
from functools import partial

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, bundle_env
from torch import nn

from bundle.constants import ABNORMAL_SBR
from bundle.dat.binding import binding_ratio, dl_binding_ratio, group_comparison, salient_region
from bundle.dat.cases import checked_cases, fold_cases
from bundle.dat.classifiers import DATNet, DaTSpectCNN
from bundle.dat.preprocessing import DaTSettingd, LowerSideLeftd, setting_shape, to_template
from bundle.dat.template import AFFINE, SHAPE, region_masks
from bundle.explain.fullgrad import full_gradients
from bundle.explain.layers import sequential_layers
from bundle.explain.lrp import AlphaBeta, Epsilon, Flat, lrp, paper_layout
from bundle.synthetic.dat_cohort import generate_dat_cohort
from bundle.synthetic.dat_phantom import PATTERNS, SPECT, measured_sbr, simulate_dat, striatal_binding
from bundle.synthetic.smwi_cohort import generate_cohort
from bundle.synthetic.smwi_model import sample_labels


def test_spect_phantom_measured_sbr_equals_the_label_within_5_percent():
    labels = sample_labels(40, np.random.default_rng(3))
    rng = np.random.default_rng(4)
    for right, left in zip(labels["sbr_right"], labels["sbr_left"], strict=True):
        volume = simulate_dat({"right": right, "left": left}, PATTERNS["spect"], SPECT, rng)
        assert measured_sbr(volume, "right") == pytest.approx(right, rel=0.05)
        assert measured_sbr(volume, "left") == pytest.approx(left, rel=0.05)


def test_reduced_striatum_loses_posterior_putamen_first_then_anterior_then_caudate():
    parts = striatal_binding(1.5, PATTERNS["spect"])
    assert parts["putamen_posterior"] < parts["putamen_anterior"] < parts["caudate"]
    healthy = striatal_binding(4.5, PATTERNS["spect"])
    assert healthy["putamen_posterior"] == pytest.approx(healthy["caudate"])  # no loss above the healthy mean
    psp = striatal_binding(1.5, PATTERNS["PSP"])
    assert psp["caudate"] == pytest.approx(psp["putamen_posterior"])


def test_dat_cohort_has_the_smwi_cohorts_patients_split_and_sbr(tmp_path):
    smwi = json.loads(generate_cohort(tmp_path / "smwi", n_patients=12, seed=5, progress=False).read_text())
    spect = json.loads(generate_dat_cohort(tmp_path / "spect", "spect", n_patients=12, seed=5, progress=False)
                       .read_text())  # fmt: skip
    for section, cases in smwi.items():
        assert [c["id"] for c in spect[section]] == [c["id"] for c in cases]
        for a, b in zip(cases, spect[section], strict=True):
            assert (b["sbr_right"], b["sbr_left"]) == (a["sbr_right"], a["sbr_left"])
            reduced = a["sbr_right"] < ABNORMAL_SBR["right"] or a["sbr_left"] < ABNORMAL_SBR["left"]
            assert b["label"] == int(reduced)
    image = nib.load(tmp_path / "spect" / spect["test"][0]["image"])
    assert image.shape == SHAPE and np.allclose(image.affine, AFFINE)
    pooled = fold_cases(str(tmp_path / "spect" / "datalist.json"), "training", folds=3, fold=1)
    held = fold_cases(str(tmp_path / "spect" / "datalist.json"), "validation", folds=3, fold=1)
    assert len(pooled) + len(held) == len(spect["training"]) + len(spect["validation"])
    assert not {c["id"] for c in pooled} & {c["id"] for c in held}


def test_bad_cases_are_refused_one_line_each_and_the_rest_go_on(tmp_path):
    good = nib.Nifti1Image(np.ones(SHAPE, np.float32), AFFINE)
    nib.save(good, tmp_path / "good.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), AFFINE), tmp_path / "small.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    cases = [{"id": name, "image": f"{name}.nii.gz", "label": 0} for name in ("good", "small", "broken", "missing")]
    (tmp_path / "list.json").write_text(json.dumps({"test": cases}))
    out = tmp_path / "out"
    kept = checked_cases(str(tmp_path / "list.json"), "test", str(tmp_path), str(out))
    assert [c["id"] for c in kept] == ["good"]
    rows = (out / "errors.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["small", "broken", "missing"]
    assert "template" in rows[1] and all("\n" not in row for row in rows)
    (tmp_path / "list.json").write_text(json.dumps({"test": cases[:1]}))
    checked_cases(str(tmp_path / "list.json"), "test", str(tmp_path), str(out))
    assert not (out / "errors.csv").exists()  # no stale list beside a clean run's outputs


def test_lower_side_goes_left_and_settings_crop_or_blank_the_striatal_box():
    volume = torch.ones(1, *SHAPE)
    masks = region_masks()
    volume[0][torch.as_tensor(masks["putamen_left"])] = 5.0  # the right putamen is the lower one
    out = LowerSideLeftd("image")({"image": volume})
    assert out["image_mirrored"] and float(out["image"][0][torch.as_tensor(masks["putamen_left"])].mean()) == 1.0
    crop = DaTSettingd("image", "striatum")({"image": volume})["image"]
    assert tuple(crop.shape[1:]) == setting_shape("striatum")
    assert to_template(crop[0].numpy(), "striatum")[masks["putamen_left"]].mean() == 5.0
    blank = DaTSettingd("image", "without_striatum")({"image": volume})["image"]
    assert float(blank[0][torch.as_tensor(masks["striatum"])].abs().sum()) == 0.0
    assert float(blank[0][torch.as_tensor(masks["insula_left"])].min()) == 1.0


def test_network_parameter_counts_and_output_shapes():
    spect = DaTSpectCNN(SHAPE)
    features = 16 * 36 * 44 * 36
    convs = (27 + 1) * 16 + 3 * (16 * 27 + 1) * 16
    assert sum(p.numel() for p in spect.parameters()) == convs + (features + 1) * 16 + 2 * 17 * 16 + 17 * 2
    assert spect(torch.zeros(2, 1, *SHAPE)).shape == (2, 2)
    net = DATNet()
    blocks = [(32, 32, False), (32, 64, True), (64, 128, True), (128, 256, True)]
    expected = 125 * 32 + 2 * 32 + 256 * 4 + 4
    for cin, cout, down in blocks:
        expected += 27 * cin * cout + 27 * cout * cout + 4 * cout + (cin * cout + 2 * cout if down else 0)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net(torch.zeros(2, 1, *SHAPE)).shape == (2, 4)


def test_lrp_epsilon_conserves_relevance_through_the_fc_layers_of_a_toy_spect_cnn():
    torch.manual_seed(0)
    net = DaTSpectCNN((4, 4, 3), filters=2, hidden=4, dropout=0.2)
    for module in net.modules():
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)  # epsilon-LRP conserves exactly only without bias absorption
    layers = sequential_layers(net)
    rules = paper_layout(layers, flat_convs=2)
    kinds = [type(r) for r in rules if r is not None]
    assert kinds == [Flat, Flat, AlphaBeta, AlphaBeta, Epsilon, Epsilon, Epsilon, Epsilon]
    x = torch.rand(3, 1, 4, 4, 3) + 0.1
    target = torch.tensor([0, 1, 1])
    _, per_layer = lrp(net, x, layout=partial(paper_layout, flat_convs=2), return_layers=True, target=target)
    logit = net.eval()(x).gather(1, target[:, None]).reshape(-1).detach()
    linear_inputs = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
    for index in [*linear_inputs, len(layers)]:  # relevance entering every FC layer, and the top
        assert torch.allclose(per_layer[index].flatten(1).sum(1), logit, atol=1e-3), index


def test_full_gradient_completeness_on_a_toy_datnet_with_batch_norm():
    torch.manual_seed(0)
    net = DATNet(channels=(2, 3, 3, 4))
    net.train()
    for _ in range(3):  # running statistics away from their initial values
        net(torch.randn(4, 1, 24, 24, 24))
    net.eval()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm3d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    parts = full_gradients(net, torch.randn(3, 1, 24, 24, 24), torch.tensor([0, 2, 3]))
    assert parts.completeness_gap().max() < 1e-4


def test_binding_ratios_on_a_hand_made_volume():
    volume = np.ones((4, 4, 4))
    volume[0, 0, :2] = [5.0, 3.0]  # the specific region
    volume[3] = 2.0  # the reference
    reference = np.zeros_like(volume, bool)
    reference[3] = True
    specific = np.zeros_like(reference)
    specific[0, 0, :2] = True
    assert binding_ratio(volume, specific, reference) == pytest.approx((4.0 - 2.0) / 2.0)
    saliency = np.zeros_like(volume)
    saliency[0, 0, 0], saliency[0, 0, 1], saliency[1, 1, 1] = 9.0, 6.0, 3.0  # normalised: 1, 2/3, 1/3 (min 0)
    within = np.ones_like(reference)
    region = salient_region(saliency, within, threshold=0.6)  # the two specific voxels
    assert region.sum() == 2 and region[0, 0, 0] and region[0, 0, 1]
    assert dl_binding_ratio(volume, saliency, reference, within, 0.6) == pytest.approx(1.0)
    assert dl_binding_ratio(volume, saliency, reference, within, 0.7) == pytest.approx((5.0 - 2.0) / 2.0)
    comparison = group_comparison([1, 2, 3, 7, 8, 9], ["A", "A", "A", "B", "B", "B"], ["A", "B"])
    assert comparison["median"] == {"A": 2.0, "B": 8.0} and comparison["pairs"]["A vs B"] == pytest.approx(0.1)


def _bundle(name: str, workflow: str, tmp_path, *overrides: str) -> None:
    folder = REPO / "bundles" / name / "configs"
    configs = (
        [str(folder / "train.json")]
        if workflow == "train"
        else [str(folder / "inference.json"), str(folder / f"{workflow}.json")]
    )
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        json.dumps(configs),
        "--bundle_root",
        str(tmp_path),
        "--dataset_dir",
        str(tmp_path / "data"),
        "--n_patients",
        "30",
        *overrides,
    ]
    result = subprocess.run(command, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_dat_spect_bundle_trains_evaluates_and_explains(tmp_path):
    tiny = ["--network_def#filters", "2"]
    _bundle("dat_spect", "train", tmp_path, "--num_epochs", "1", *tiny)
    trained = tmp_path / "runs" / "train" / "model.pt"  # training never writes the shipped models/model.pt
    assert trained.is_file() and not (tmp_path / "models" / "model.pt").exists()
    tiny += ["--ckpt_path", str(trained)]
    _bundle("dat_spect", "evaluate", tmp_path, *tiny)
    metrics = json.loads((tmp_path / "runs" / "evaluate" / "metrics.json").read_text())
    n_test = len(json.loads((tmp_path / "data" / "datalist.json").read_text())["test"])
    assert metrics["n"] == n_test and metrics["tp"] + metrics["fn"] + metrics["fp"] + metrics["tn"] == n_test
    _bundle("dat_spect", "explain", tmp_path, *tiny, "--correct_only", "false")  # a 1-epoch net may miss a class
    out = tmp_path / "runs" / "explain"
    heat = nib.load(out / "heat_map.nii.gz")
    assert heat.shape == SHAPE and np.allclose(heat.affine, AFFINE)
    assert (out / "heat_map.png").stat().st_size > 10_000
    summary = json.loads((out / "explain.json").read_text())
    assert set(summary["cluster_overlap"]) == {"magnitude", "positive", "negative"}
    assert set(summary["cluster_overlap"]["magnitude"]) >= {"putamen_left", "insula_left"}
    assert len(list((out / "maps").glob("*_relevance.nii.gz"))) == n_test


def test_datnet_bundle_trains_and_reports_auc_and_binding_ratios(tmp_path):
    tiny = ["--network_def#channels", "[2, 2, 4, 4]"]
    _bundle("datnet", "train", tmp_path, "--num_epochs", "2", "--patience", "1", *tiny)
    tiny += ["--ckpt_path", str(tmp_path / "runs" / "train" / "model.pt")]
    _bundle("datnet", "evaluate", tmp_path, *tiny)
    metrics = json.loads((tmp_path / "runs" / "evaluate" / "metrics.json").read_text())
    n_test = len(json.loads((tmp_path / "data" / "datalist.json").read_text())["test"])
    assert metrics["n"] == n_test and 0.0 <= metrics["accuracy"] <= 1.0
    assert {"br", "dl_br"} <= set(metrics["binding"]) and "median" in metrics["binding"]["dl_br"]
    _bundle("datnet", "explain", tmp_path, *tiny)
    out = tmp_path / "runs" / "explain"
    assert nib.load(out / "dl_br_region.nii.gz").shape == SHAPE
    assert (out / "binding_ratios.csv").read_text().count("\n") == n_test + 1
