"""Table 3 baselines as network_def presets: parameter counts, output shapes, MC dropout, explain maps, training."""

import subprocess
import sys

import pytest
import torch
from conftest import REPO, bundle_env, workflow_configs
from monai.networks.nets import ViT, resnet18

from bundle.explain.fullgrad import fullgrad_saliency
from bundle.explain.hirescam import hirescam
from bundle.explain.lrp import lrp
from bundle.method.baselines import ARCHITECTURES, MOBILENETV3_SMALL, BaselineRegressor
from bundle.method.networks import SymmetricRegressor


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    return {arch: BaselineRegressor(arch).eval() for arch in ARCHITECTURES}


def test_parameter_counts(networks):
    head = {"resnet18": 512, "vit": 192, "vgg16": 1024, "mobilenetv3": 576}
    for arch, net in networks.items():
        assert net.num_features == head[arch] and net.fc.in_features == head[arch]
    assert parameters(networks["resnet18"]) == parameters(resnet18(spatial_dims=3, n_input_channels=1,
                                                                   feed_forward=False)) + 513  # fmt: skip
    vit = ViT(1, (50, 50, 20), (10, 10, 10), hidden_size=192, mlp_dim=768, num_layers=6, num_heads=6)
    assert parameters(networks["vit"]) == parameters(vit) + 193
    widths = [(1, 64), (64, 64), (64, 128), (128, 128), (128, 256), *[(256, 256)] * 2, (256, 512),
              *[(512, 512)] * 5]  # fmt: skip
    assert len(widths) == 13  # configuration D: 13 convolutions
    assert parameters(networks["vgg16"]) == sum(27 * i * o + o for i, o in widths) + 1024 + 1
    assert len(MOBILENETV3_SMALL) == 11 and 1_000_000 < parameters(networks["mobilenetv3"]) < 1_300_000


def test_outputs_pairs_and_mc_dropout(networks):
    x = torch.rand(2, 1, 50, 50, 20)
    for arch, net in networks.items():
        assert net(x).shape == (2, 1), arch
        samples = net.mc_forward(x, 8)
        assert samples.shape == (8, 2) and samples.std(0).min() > 0, arch  # dropout varies the samples
        assert torch.allclose(net(x), net(x)), arch  # eval: deterministic
        assert SymmetricRegressor(net)(torch.rand(3, 2, 50, 50, 20)).shape == (3, 2), arch
        again = BaselineRegressor(**net.config())
        assert parameters(again) == parameters(net), arch


def test_which_maps_each_baseline_gets(networks):
    x = torch.rand(1, 1, 50, 50, 20)
    for arch, net in networks.items():
        assert fullgrad_saliency(net, x).shape == (1, 1, 50, 50, 20), arch
        if arch == "vit":  # no convolution after the patch embedding's: HiResCAM of the embedding is not the model's
            continue
        assert hirescam(net, x).shape == (1, 1, 50, 50, 20), arch
    with pytest.raises(TypeError, match="no plain layer sequence"):
        lrp(networks["resnet18"], x)  # LRP rules here cover the plain VGG layer sequence only


def test_a_preset_trains_and_infers_through_the_bundle(tmp_path, tiny_cohort):
    preset = str(REPO / "configs" / "baselines" / "mobilenetv3.json")
    common = ["--dataset_dir", str(tiny_cohort), "--ckpt_path", str(tmp_path / "model.pt")]
    train = [sys.executable, "-m", "bundle", "run", "training", "--config_file",
             repr([*workflow_configs("training"), preset]), "--num_epochs", "1", "--output_dir",
             str(tmp_path / "train"), *common]  # fmt: skip
    result = subprocess.run(train, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    infer = [sys.executable, "-m", "bundle", "run", "inference", "--config_file",
             repr([*workflow_configs("inference"), preset]), "--mc_samples", "5", "--reports", "false",
             "--output_dir", str(tmp_path / "out"), *common]  # fmt: skip
    result = subprocess.run(infer, cwd=REPO, env=bundle_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[1].split(",")[6] != ""  # three test cases, each with an interval
