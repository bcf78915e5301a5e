"""Benchmark: D2S training throughput (pairs/s) and peak memory at the real vocabulary size.

    python benchmarks/bench_d2s_training.py [--batch 512] [--steps 6] [--threads 2]

Times optimiser steps of the stage-02 head (d = 256, H = 384, V = 30,522, MiniLM-initialised
vocabulary layer) in fp32 and with CPU bf16 autocast, with full expansion and with masked text.
Writes ``results/benchmarks/02_d2s_training_<device>[_<tag>].json`` with the machine described (``--tag``: keep
one file per kind of machine, e.g. ``avx2`` beside the AVX512-BF16 machine's file).
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lsr_lib.config.profiles import REPO_ROOT, D2SConfig  # noqa: E402
from lsr_lib.train.d2s import build_model, make_optimizer, training_step  # noqa: E402
from lsr_lib.dense.encoder import pick_device  # noqa: E402
from lsr_lib.results.provenance import machine, versions  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tag", default="", help="file name suffix naming the machine kind, e.g. avx2")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(args.batch, 256, generator=gen), dim=-1).to(device)
    txt = torch.nn.functional.normalize(img + 0.5 * torch.randn(args.batch, 256, generator=gen).to(device), dim=-1)
    rows = []
    for cpu_bf16 in (False, True):
        for masked in (False, True):
            cfg = D2SConfig(batch_size=args.batch, epochs=1, cpu_bf16=cpu_bf16)
            model = build_model(cfg, 256).to(device)
            opt, sched, warm = make_optimizer(model, cfg, args.steps + 1)
            scaler = torch.amp.GradScaler(device.type, enabled=False)
            mask = (
                (torch.rand(args.batch, model.vocab_size, generator=gen) < 0.0005).float().to(device)
                if masked
                else None
            )
            times = []
            for step in range(args.steps + 1):
                t0 = time.perf_counter()
                training_step(model, opt, sched, scaler, cfg, img, txt, mask, step, warm)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            med = statistics.median(times[1:])  # first step is warm-up
            rows.append(
                {
                    "precision": "bf16 autocast" if cpu_bf16 or device.type == "cuda" else "fp32",
                    "text": "masked" if masked else "full expansion",
                    "seconds_per_step": round(med, 3),
                    "pairs_per_s": round(args.batch / med, 1),
                }
            )
            print(rows[-1], flush=True)
    out = {
        "benchmark": "02_d2s_training",
        "device": str(device),
        "batch": args.batch,
        "vocab": 30522,
        "hidden": 384,
        "dense_dim": 256,
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": machine(),
        "versions": versions(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = (
        REPO_ROOT / "results" / "benchmarks" / f"02_d2s_training_{device.type}{'_' + args.tag if args.tag else ''}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
