"""Plot the network input of one patient: the mirrored right and the left nigral patch (centre axial slice).

Uses the validation preprocessing of ``configs/train.json``, so the picture is exactly what the network sees.

Usage (from the repository root)::

    python scripts/plot_patch_pair.py [--datalist data/demo/datalist.json] [--section validation] [--index 0]
        [--out docs/figures/patch_pair.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai.bundle import ConfigParser  # noqa: E402

from bundle.data import load_cases, resolve_datalist  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datalist", default=str(REPO / "data" / "demo" / "datalist.json"))
    parser.add_argument("--section", default="validation")
    parser.add_argument("--index", type=int, default=0, help="case index in the section")
    parser.add_argument("--out", default=str(REPO / "docs" / "figures" / "patch_pair.png"))
    args = parser.parse_args()

    config = ConfigParser()
    config.read_config(str(REPO / "configs" / "train.json"))
    datalist = resolve_datalist(args.datalist, REPO)
    case = load_cases(datalist, args.section)[args.index]
    item = config.get_parsed_content("validate#preprocessing", instantiate=True)(case)
    pair = item["image"].numpy()
    centre = tuple(s // 2 for s in pair.shape[1:])

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 4.0), constrained_layout=True)
    titles = (f"right (mirrored), SBR {case['sbr_right']:.2f}", f"left, SBR {case['sbr_left']:.2f}")
    for ax, patch, title in zip(axes, pair, titles, strict=True):
        # axis 0 is left-right, axis 1 posterior-anterior: show anterior up, the patch's +x to the right
        image = ax.imshow(patch[:, :, centre[2]].T, origin="lower", cmap="gray", vmin=0.3, vmax=1.7)
        ax.plot(centre[0], centre[1], "o", mfc="none", color="tab:red", markersize=16, mew=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("voxel (0.5 mm)")
    axes[0].set_ylabel("voxel (0.5 mm), anterior up")
    fig.colorbar(image, ax=axes, shrink=0.8, label="intensity / patch mean")
    title = f"Synthetic patient {case['id']} (not a real patient) - network input, slice z={centre[2]}"
    fig.suptitle(title, fontsize=10)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
