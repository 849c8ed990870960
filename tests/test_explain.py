"""Explainability maps: HiResCAM for regression, full-gradient completeness, LRP conservation and rule layout."""

import pytest
import torch
from torch import nn

from bundle.explain.fullgrad import full_gradients, fullgrad_saliency
from bundle.explain.hirescam import hirescam, regression_class_score
from bundle.explain.layers import sequential_layers
from bundle.explain.lrp import AlphaBeta, Epsilon, Flat, lrp, paper_layout
from bundle.method.networks import VGGRegressor3D


class Toy(nn.Module):
    """conv (1 -> 2 channels, same size) -> ReLU -> flatten -> linear: the hand-sized case."""

    def __init__(self, shape=(4, 4, 3), bias: float = 0.3) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU())])
        self.fc = nn.Linear(2 * shape[0] * shape[1] * shape[2], 1)
        with torch.no_grad():
            self.fc.bias.fill_(bias)

    def forward(self, x):
        return self.fc(torch.flatten(self.blocks[0](x), 1))


def test_regression_class_score_is_the_high_or_low_sbr_probability():
    score = regression_class_score(torch.tensor([0.8, 0.5, 0.2]))
    assert torch.allclose(score, torch.tensor([0.8, 0.5, 0.8]))


@pytest.mark.parametrize("bias", [0.3, 0.9])  # low-SBR (score 1 - F) and high-SBR (score F) branches
def test_hirescam_equals_gradient_times_activation_by_hand(bias):
    net = Toy(bias=bias)
    x = torch.rand(2, 1, 4, 4, 3)
    conv, fc = net.blocks[0][0], net.fc
    with torch.no_grad():
        activation = conv(x)  # the layer's output, [B, 2, 4, 4, 3]
        f = net(x).reshape(-1)
        d_f = fc.weight.reshape(1, 2, 4, 4, 3) * (activation > 0)  # dF/dA through the ReLU
        sign = torch.where(f >= 0.5, 1.0, -1.0).reshape(-1, 1, 1, 1, 1)
        expected = (sign * d_f * activation).sum(1, keepdim=True)
    assert (f >= 0.5).any() if bias > 0.5 else (f < 0.5).any()
    cam = hirescam(net, x)
    assert cam.shape == (2, 1, 4, 4, 3)
    assert torch.allclose(cam, expected, atol=1e-6)


def test_hirescam_upsamples_the_last_conv_to_the_patch():
    net = VGGRegressor3D(channels=(2, 2, 2, 2))
    cam = hirescam(net, torch.rand(1, 1, 50, 50, 20))
    assert cam.shape == (1, 1, 50, 50, 20) and torch.isfinite(cam).all()


def test_full_gradient_completeness_on_a_toy_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(3, 2, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2 * 2, 1))  # fmt: skip
    for module in net.modules():
        if hasattr(module, "bias") and module.bias is not None:
            nn.init.uniform_(module.bias, -0.5, 0.5)
    x = torch.randn(3, 1, 4, 4, 4)
    parts = full_gradients(net, x)
    assert torch.allclose(parts.output, net(x).reshape(-1), atol=1e-6)
    assert len(parts.bias_terms) == 3
    assert parts.completeness_gap().max() < 1e-4
    assert fullgrad_saliency(net, x).shape == (3, 1, 4, 4, 4)


def test_full_gradient_completeness_on_the_regressor():
    net = VGGRegressor3D(channels=(2, 2, 2, 2))
    for module in net.modules():
        if isinstance(module, (nn.Conv3d, nn.Linear)):
            nn.init.uniform_(module.bias, -0.1, 0.1)
    parts = full_gradients(net, torch.rand(2, 1, 50, 50, 20))
    assert parts.completeness_gap().max() < 1e-4 * max(1.0, parts.output.abs().max().item())


def test_lrp_epsilon_conserves_relevance_layer_to_layer():
    net = Toy(bias=0.0)
    with torch.no_grad():
        net.blocks[0][0].bias.zero_()

    def epsilon_everywhere(layers):
        return [Epsilon() if isinstance(layer, (nn.Conv3d, nn.Linear)) else None for layer in layers]

    x = torch.rand(2, 1, 4, 4, 3) + 0.1
    relevance, per_layer = lrp(net, x, layout=epsilon_everywhere, return_layers=True)
    output = net(x).reshape(-1).detach()
    assert relevance.shape == x.shape
    for entering in per_layer:
        assert torch.allclose(entering.flatten(1).sum(1), output, atol=1e-3), entering.shape


def test_lrp_paper_layout_and_maps_on_the_regressor():
    net = VGGRegressor3D(channels=(2, 2, 2, 2))
    layers = sequential_layers(net)
    rules = paper_layout(layers)
    convs = [r for layer, r in zip(layers, rules, strict=True) if isinstance(layer, nn.Conv3d)]
    assert [type(r) for r in convs] == [Flat, Flat] + [AlphaBeta] * 6
    assert all(r.alpha == 2 and r.beta == 1 for r in convs[2:])
    assert isinstance(rules[-1], Epsilon) and rules[-1].epsilon == 1e-4
    relevance = lrp(net, torch.rand(1, 1, 50, 50, 20))
    assert relevance.shape == (1, 1, 50, 50, 20) and torch.isfinite(relevance).all()


def test_alpha_beta_follows_its_equation_by_hand():
    """R_i = sum_j (alpha z+_ij / z+_j - beta z-_ij / z-_j) R_j, a term with z-_j = 0 taken as 0."""
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.2, 0.1, 3.0]]))
    a = torch.tensor([[1.0, 0.5, 2.0]])
    relevance = torch.tensor([[1.0, 2.0]])
    z = a * layer.weight  # [2, 3] contributions z_ij (output j, input i)
    z_pos, z_neg = z.clamp(min=0), z.clamp(max=0)
    share_neg = torch.nan_to_num(z_neg / z_neg.sum(1, keepdim=True))
    expected = ((2 * z_pos / z_pos.sum(1, keepdim=True) - share_neg) * relevance.T).sum(0, keepdim=True)
    assert torch.allclose(AlphaBeta()(layer, a, relevance), expected, atol=1e-5)


def mean_intensity_network(shape=(50, 50, 20)) -> nn.Sequential:
    """F = mean of the patch (through a 1x1x1 identity convolution): every map peaks where the patch is bright."""
    net = nn.Sequential(nn.Conv3d(1, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
        net[3].weight.fill_(1.0 / (shape[0] * shape[1] * shape[2]))
        net[3].bias.zero_()
    return net


def test_right_maps_mirrored_back_overlay_the_bright_blob_on_the_right(tmp_path):
    """One bright blob 4 mm lateral of the right centroid only: every method's right-side NIfTI map peaks at the
    blob's world position (a map left in the mirrored frame would peak 8 mm away, at its mirror image)."""
    import nibabel as nib
    import numpy as np
    from monai.transforms import Compose

    from bundle.data import DivideByMeand, LoadNigralPatchesd
    from bundle.explain.explainer import Explainer

    shape, spacing = (120, 100, 40), np.array([0.5, 0.5, 1.0])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-30.0, -25.0, -20.0]
    right, left = np.array([80, 50, 20]), np.array([40, 50, 20])  # right: larger RAS x
    blob = right + [8, 0, 0]  # 4 mm toward the subject's right
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    volume = 100.0 + 900.0 * np.exp(-(((grid - blob) * spacing) ** 2).sum(-1) / (2 * 1.5**2))
    image = tmp_path / "blob.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), image)
    case = {"id": "B1", "image": str(image), "centroid_right": right.tolist(), "centroid_left": left.tolist(),
            "centroid_space": "voxel"}  # fmt: skip
    load = Compose([LoadNigralPatchesd(), DivideByMeand(keys=["patch_right", "patch_left"])])
    Explainer(mean_intensity_network(), load, [case], tmp_path / "out", sbr_max=6.84, figures=False).run()
    blob_world = (affine @ [*blob, 1.0])[:3]
    for method in ("hirescam", "lrp", "fullgrad"):
        saved = nib.load(tmp_path / "out" / "B1" / f"{method}_right.nii.gz")
        data = np.asarray(saved.dataobj)
        peak = np.unravel_index(np.argmax(data), data.shape)
        assert np.linalg.norm((saved.affine @ [*peak, 1.0])[:3] - blob_world) < 1.0, method
        left_map = np.asarray(nib.load(tmp_path / "out" / "B1" / f"{method}_left.nii.gz").dataobj)
        assert left_map.max() < 0.5 * data.max(), method  # nothing bright on the left


def test_explain_workflow_writes_maps_that_overlay_the_patch(tmp_path, tiny_cohort):
    import subprocess
    import sys

    import nibabel as nib
    import numpy as np
    from conftest import REPO, bundle_env, workflow_configs

    model = tmp_path / "model.pt"
    torch.manual_seed(0)
    torch.save(VGGRegressor3D(channels=(2, 2, 2, 2)).state_dict(), model)
    cmd = [sys.executable, "-m", "bundle", "run", "explain", "--config_file", repr(workflow_configs("explain")),
           "--dataset_dir", str(tiny_cohort), "--ckpt_path", str(model), "--network_def#channels", "[2,2,2,2]",
           "--n_cases", "2", "--output_dir", str(tmp_path / "out")]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (tmp_path / "out" / "explain.csv").read_text().splitlines()
    assert rows[0] == "id,pred_right,pred_left,true_right,true_left,folder" and len(rows) == 3
    case = tmp_path / "out" / rows[1].split(",")[0]
    assert (case / "panel.png").stat().st_size > 10_000
    for side in ("right", "left"):
        patch = nib.load(case / f"patch_{side}.nii.gz")
        assert patch.shape == (50, 50, 20) and patch.affine[0, 0] > 0  # RAS, right side flipped back
        for method in ("hirescam", "lrp", "fullgrad"):
            found = nib.load(case / f"{method}_{side}.nii.gz")
            assert found.shape == patch.shape and np.allclose(found.affine, patch.affine)


def test_enrichment_ratio_and_pointing_game_by_hand():
    import numpy as np

    from bundle.explain.measures import enrichment_ratio, pointing_hit

    saliency = np.array([[4.0, 1.0], [-3.0, 0.0]])
    mask = np.array([[True, False], [False, False]])
    assert enrichment_ratio(saliency, mask) == pytest.approx((4 / 5) / (1 / 4))  # negative evidence ignored
    assert enrichment_ratio(np.ones((2, 2)), mask) == pytest.approx(1.0)  # a flat map has no preference
    assert np.isnan(enrichment_ratio(-np.ones((2, 2)), mask))
    assert pointing_hit(saliency, mask) and not pointing_hit(saliency, ~mask)


def test_structure_masks_render_the_cohort_case_again(tiny_cohort):
    import json

    import nibabel as nib
    import numpy as np

    from bundle.synthetic.smwi_cohort import structure_masks

    case = json.loads((tiny_cohort / "datalist.json").read_text())["test"][0]
    masks, affine = structure_masks(tiny_cohort, case["id"])
    image = nib.load(tiny_cohort / case["image"])
    assert np.allclose(affine, image.affine)
    assert set(masks) == {f"{s}_{side}" for s in ("nigrosome", "nigra", "red_nucleus") for side in ("right", "left")}
    for side in ("right", "left"):
        assert masks[f"nigrosome_{side}"].shape == image.shape and masks[f"nigrosome_{side}"].sum() > 10
        # the annotated nigrosome-1 centroid lies within 2 voxels of the nigrosome mask
        inside = np.argwhere(masks[f"nigrosome_{side}"])
        assert np.min(np.abs(inside - np.asarray(case[f"centroid_{side}"])).max(axis=1)) <= 2
        # the red nucleus is medial to the nigra, darker in SMWI
        volume = np.asarray(image.dataobj, dtype=float)
        assert volume[masks[f"red_nucleus_{side}"]].mean() < volume[masks[f"nigra_{side}"] == 0].mean()


def test_embedding_order_tells_an_ordered_embedding_from_noise():
    import numpy as np

    from bundle.explain.measures import embedding_order

    rng = np.random.default_rng(0)
    values = rng.uniform(0.5, 6.0, 60)
    ordered = np.stack([values + 0.05 * rng.standard_normal(60), rng.standard_normal(60)], axis=1)
    scores = embedding_order(ordered, values)
    assert scores["spearman_axis"] > 0.95 and scores["knn_r2"] > 0.9
    noise = embedding_order(rng.standard_normal((60, 2)), values)
    assert noise["spearman_axis"] < 0.4 and noise["knn_r2"] < 0.2


def test_explain_study_script_end_to_end(tmp_path, tiny_cohort):
    import json
    import subprocess
    import sys

    from conftest import REPO, bundle_env
    from subjects import tiny_model

    model = tiny_model(tmp_path / "model.pt")
    cmd = [sys.executable, "scripts/explain_study.py", "--ckpt", str(model), "--standard-ckpt", str(model),
           "--dataset-dir", str(tiny_cohort), "--n-cases", "3", "--out", str(tmp_path / "study")]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    assert set(study["models"]) == {"symmetric", "standard (single-side)", "symmetric, left"}
    symmetric = study["models"]["symmetric"]
    assert len(symmetric["records"]) == 3 * 2 * 3  # cases x sides x methods
    assert set(symmetric["summary"]) == {"hirescam", "lrp", "fullgrad"}
    assert set(study["tsne"]) == {"symmetric", "standard (single-side)"}
    for name in ("study.md", "study.png", "tsne.png"):
        assert (tmp_path / "study" / name).stat().st_size > 200
