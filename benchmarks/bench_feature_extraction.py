"""Benchmark: stage 01 tower feature extraction throughput and peak memory on this machine.

    python benchmarks/bench_feature_extraction.py [--images 512] [--captions 4096] [--threads 2]
        [--backends torch,onnxruntime]

Writes ``results/benchmarks/01_feature_extraction_<device>.json`` with the machine described. The image tower
is timed once per backend (``extraction.image_backend``) on the same images in the same run, with the largest
feature difference between them.
A benchmark, not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lsr_lib.config.profiles import REPO_ROOT  # noqa: E402
from lsr_lib.dense.encoder import pick_device  # noqa: E402
import numpy as np  # noqa: E402

from lsr_lib.data.emoji import build_openmoji_collection, on_white, openmoji_svg_dir, render_svg  # noqa: E402
from lsr_lib.results.provenance import machine, versions  # noqa: E402
from lsr_lib.dense.towers import ImageTower, TextTower  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, items, batch):
    fn(items[:batch])  # warm-up
    t0 = time.perf_counter()
    for s in range(0, len(items), batch):
        fn(items[s : s + batch])
    return len(items) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--captions", type=int, default=4096)
    ap.add_argument("--image-batch", type=int, default=64)
    ap.add_argument("--text-batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backends", default="torch,onnxruntime", help="image tower backends, timed in this order")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    col = build_openmoji_collection()
    svgs = [openmoji_svg_dir() / f"{i}.svg" for i in col.images["image_id"][: args.images]]
    t0 = time.perf_counter()
    rgba = [render_svg(p, 224) for p in svgs]
    render_rate = len(rgba) / (time.perf_counter() - t0)
    images = [on_white(im) for im in rgba]
    rss_before = peak_rss_mib()
    towers = {b: ImageTower(device, backend=b) for b in args.backends.split(",")}
    img_rates = {b: round(timed(t, images, args.image_batch), 1) for b, t in towers.items()}
    first = {b: t(images[: args.image_batch]) for b, t in towers.items()}
    ref = first[next(iter(first))]
    max_diff = {
        b: {part: float(np.abs(f[part] - ref[part]).max()) for part in ("avg", "max", "logits")}
        for b, f in first.items()
    }
    texts = (col.captions["text"].tolist() * 10)[: args.captions]
    txt_rate = timed(TextTower(device), texts, args.text_batch)
    out = {
        "benchmark": "01_feature_extraction",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "svg_render_images_per_s": round(render_rate, 1),
        "image_tower_images_per_s": img_rates[next(iter(img_rates))],
        "image_tower_images_per_s_by_backend": img_rates,
        "image_tower_max_abs_difference_to_first_backend": max_diff,
        "image_batch": args.image_batch,
        "text_tower_captions_per_s": round(txt_rate, 1),
        "text_batch": args.text_batch,
        "n_images": len(images),
        "n_captions": len(texts),
        "peak_rss_mib": round(peak_rss_mib(), 0),
        "peak_rss_mib_before_models": round(rss_before, 0),
        "machine": machine(),
        "versions": versions(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = REPO_ROOT / "results" / "benchmarks" / f"01_feature_extraction_{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("machine", "versions")}, indent=2))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
