"""Seconds per D2S training step with AdamW's for-loop (torch's CPU default), foreach and fused implementations (the
default profile's shapes).

    python benchmarks/d2s_optimizer.py      # -> results/benchmarks/02_d2s_optimizer_cpu.json

Batch 128 pairs of 256-d embeddings, the MiniLM vocabulary head (V = 30,522, H = 384), bf16
autocast as ``cpu_bf16``, half the captions masked to their own tokens; median of 8 steps after 2
warm-up steps, with the profile's thread count.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsr_lib.config.profiles import load_config  # noqa: E402
from lsr_lib.results.provenance import machine, seed_everything  # noqa: E402
from lsr_lib.stages.train_sparse_heads import condition_config  # noqa: E402
from lsr_lib.storage.atomic import atomic_write_json  # noqa: E402
from lsr_lib.train import d2s as D  # noqa: E402
from lsr_lib.train.d2s_method import ExpansionGate  # noqa: E402


def seconds_per_step(impl: str, steps: int = 10, batch: int = 128) -> float:
    cfg = load_config("default")
    c = condition_config(cfg.d2s, "with_control")
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(steps * batch, 256, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(steps * batch, 256, generator=g), dim=1)
    mask_ids = torch.randint(1000, 30000, (steps * batch, 16), generator=g)
    model = D.build_model(c, 256)
    opt, sched, warm = D.make_optimizer(model, c, 1600)
    if impl != "fused":  # the same groups with the for-loop (torch's CPU default) or foreach implementation
        opt = torch.optim.AdamW(
            opt.param_groups, weight_decay=c.weight_decay, eps=c.adam_eps, foreach=impl == "foreach"
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler, gate, times = torch.amp.GradScaler("cpu", enabled=False), ExpansionGate(c.gate, 2), []
    for b in range(steps):
        idx = torch.arange(b * batch, (b + 1) * batch)
        m = gate.text_masks(gate.draw(0.5, batch), mask_ids[idx], model.vocab_size)
        t0 = time.perf_counter()
        D.training_step(model, opt, sched, scaler, c, img[idx], txt[idx], m, 500, warm)
        times.append(time.perf_counter() - t0)
    return sorted(times[2:])[len(times[2:]) // 2]


def main() -> int:
    cfg = load_config("default")
    seed_everything(0, cfg.threads or None)
    rows = {name: round(seconds_per_step(name), 4) for name in ("for-loop", "foreach", "fused")}
    out = {
        "benchmark": "02_d2s_optimizer",
        "batch": 128,
        "seconds_per_step": rows,
        "speedup_fused_over_for_loop": round(rows["for-loop"] / rows["fused"], 2),
        "machine": machine(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = atomic_write_json(ROOT / "results" / "benchmarks" / "02_d2s_optimizer_cpu.json", out)
    print(rows, f"fused vs for-loop {out['speedup_fused_over_for_loop']}x ->", path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
