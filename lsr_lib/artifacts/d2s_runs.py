"""Stage 02's D2S run of one condition, trained, resumed or reused (DESIGN.md section 2).

The one call that names the run's folder and the inputs its fingerprint records, shared by stage 02
and by stage 07, whose data-scale study and knob search reuse stage 02's very run at the full
training set instead of retraining it.
"""

from __future__ import annotations

import torch

from ..config.profiles import Config
from ..train.d2s import train_d2s
from ..train.d2s_conditions import condition_config
from .catalog import d2s_run_dir, dense_content_id


def train_condition(
    cfg: Config, name: str, train: dict, val: dict, device: torch.device, progress: bool = True
) -> dict:
    """Train (or resume, or reuse) one condition's model."""
    return train_d2s(
        condition_config(cfg.d2s, name),
        train,
        val,
        d2s_run_dir(cfg, name),
        device=device,
        progress=progress,
        inputs={"dense": dense_content_id(cfg)},
    )
