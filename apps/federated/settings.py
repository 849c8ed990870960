"""What a consortium chooses for the federated job, each default defined here once (the command line of
``python -m apps.federated`` reads them). No NVFlare or torch import, so that ``--help`` stays fast."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PRIVACY", "FederatedSettings"]

PRIVACY = ("none", "exclude", "percentile")


@dataclass
class FederatedSettings:
    """What a consortium chooses (README "Multi-center"; defaults: the quick-start recipe split into rounds)."""

    sites: Mapping[str, Path]  # site name -> its data folder (with datalist.json)
    output_dir: Path
    configs: Sequence[str] = ("configs/train.json", "configs/quick_start.json")
    overrides: Mapping[str, Any] = field(default_factory=dict)
    rounds: int = 16
    local_epochs: int = 2
    min_sites: int = 2
    privacy: str = "none"
    exclude_vars: str = "fc\\..*"  # the linear head stays local with --privacy exclude
    percentile: int = 10
    percentile_gamma: float = 0.01
    round_timeout_s: int = 0
    drop_out: Mapping[str, int] = field(default_factory=dict)  # fault drill: site -> round at which it fails
    seed: int = 0

    def check(self) -> None:
        if len(self.sites) < 1 or not 1 <= self.min_sites <= len(self.sites):
            raise ValueError(f"min_sites must be between 1 and the {len(self.sites)} site(s), got {self.min_sites}")
        if self.rounds < 1 or self.local_epochs < 1:
            raise ValueError(f"rounds and local_epochs must be >= 1, got {self.rounds} and {self.local_epochs}")
        if self.privacy not in PRIVACY:
            raise ValueError(f"privacy must be one of {PRIVACY}, got {self.privacy!r}")
        for site, folder in self.sites.items():
            if not (Path(folder) / "datalist.json").is_file():
                raise ValueError(f"{site}: no datalist.json in {folder}")
