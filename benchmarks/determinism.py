"""Benchmark: are the trained parts reproducible bit for bit, and if not, by how much do they drift?

    python benchmarks/determinism.py [--seed 0] [--threads 1 2] [--repeats 2] [--no-emulated-isa]

Trains the LiT projection (``train_lit``) and a D2S head (``train_d2s``, fp32 and CPU bf16
autocast) on tiny synthetic data with the repository's own training functions. Every run is a
fresh process that calls ``seed_everything(seed, threads)`` first, as a notebook does: ``--repeats``
runs per thread count in ``--threads``, plus one run at the first thread count on an emulated
older CPU (torch, MKL and oneDNN held to AVX2: ``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``,
``ONEDNN_MAX_CPU_ISA``), the nearest this machine gets to "another machine". Compares final weights
(bitwise equal? max abs difference) and text->image R@1 on the training set, and writes
``results/benchmarks/determinism.json``. A benchmark, not a test (``tests/test_determinism.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from lsr_lib.config.d2s import D2SConfig  # noqa: E402
from lsr_lib.config.profiles import REPO_ROOT, LitConfig  # noqa: E402
from lsr_lib.dense.lit_projection import evaluate_projection, train_lit  # noqa: E402
from lsr_lib.results.provenance import machine, seed_everything, versions  # noqa: E402
from lsr_lib.train.d2s import load_best, train_d2s, validate_sparse  # noqa: E402

OUT = REPO_ROOT / "results" / "benchmarks" / "determinism.json"
CASES = ("lit", "d2s_fp32", "d2s_bf16")
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# Tiny but large enough that torch and MKL split the work across threads (> 32k elements per op).
N_IMG, CAPS, D, V, H, CONCEPTS = 256, 2, 64, 4096, 64, 24


def synthetic(seed: int = 0) -> dict:
    """Images mixing two concepts, two noisy captions each; caption tokens = the concepts' terms."""
    g = torch.Generator().manual_seed(seed)
    concepts = torch.randn(CONCEPTS, D, generator=g)  # (C, d)
    pick = torch.randint(0, CONCEPTS, (N_IMG, 2), generator=g)  # (N, 2)
    base = concepts[pick[:, 0]] + 0.6 * concepts[pick[:, 1]]  # (N, d)
    img = base + 0.5 * torch.randn(N_IMG, D, generator=g)  # (N, d)
    txt = base.repeat_interleave(CAPS, 0) + 0.5 * torch.randn(N_IMG * CAPS, D, generator=g)  # (N * CAPS, d)
    terms = torch.randperm(V, generator=g)[: CONCEPTS * 3].reshape(CONCEPTS, 3)
    ids = np.array([f"i{k}" for k in range(N_IMG)])
    return {
        "img": img,
        "txt": txt,
        "mask_ids": terms[pick].reshape(N_IMG, -1).repeat_interleave(CAPS, 0),  # (N * CAPS, 6)
        "views": torch.stack([img, img + 0.3 * torch.randn(N_IMG, D, generator=g)], 1),  # (N, 2 views, d)
        "text_384": txt @ torch.randn(D, 384, generator=g) / D**0.5,  # (N * CAPS, 384) MiniLM-sized texts
        "vocab": {"weight": torch.randn(V, H, generator=g), "bias": torch.zeros(V)},
        "image_ids": ids,
        "text_image_ids": ids.repeat(CAPS),
    }


def run_lit(data: dict, seed: int) -> tuple[dict, float]:
    """Train the LiT projection; (state dict, text->image R@1 on the training set)."""
    cfg = LitConfig(hidden_dim=256, epochs=10, batch_size=128, lr=5e-3, dropout=0.1, seed=seed)
    rows = np.repeat(np.arange(N_IMG), CAPS)
    model, _ = train_lit(data["views"].numpy(), data["text_384"].numpy(), rows, cfg, progress=False)
    train = {
        "image": data["views"][:, 0],
        "text": data["text_384"],
        "text_image_ids": data["text_image_ids"],
        "image_ids": data["image_ids"],
    }
    return model.state_dict(), evaluate_projection(model, train)["text_to_image"]["R@1"]


def run_d2s(data: dict, seed: int, cpu_bf16: bool, workdir: Path) -> tuple[dict, float]:
    """Train a D2S head (5 epochs, expansion control on); (state dict, text->image R@1 on the training set)."""
    vocab = workdir / "vocab.safetensors"
    save_file(data["vocab"], str(vocab))
    cfg = D2SConfig(
        vocab_init=str(vocab),
        epochs=5,
        batch_size=128,
        lr_projection=3e-2,
        lr_vocab=3e-2,
        gate="example",
        cpu_bf16=cpu_bf16,
        seed=seed,
        data_seed=seed + 1,
        gate_seed=seed + 2,
    )
    train = {
        "img_emb": data["img"].repeat_interleave(CAPS, 0),
        "txt_emb": data["txt"],
        "txt_mask_ids": data["mask_ids"],
    }
    out_dir = workdir / f"d2s_{'bf16' if cpu_bf16 else 'fp32'}"  # fresh: a finished run would be reused, not retrained
    train_d2s(cfg, train, None, out_dir, progress=False, resume=False)
    model, _ = load_best(out_dir)
    val = {
        "img_emb": data["img"],
        "txt_emb": data["txt"],
        "image_ids": data["image_ids"],
        "text_image_ids": data["text_image_ids"],
    }
    return model.state_dict(), validate_sparse(model, val, cfg)["text_to_image"]["R@1"]


def worker(out: Path, seed: int, threads: int) -> None:
    """One run of every case in this process: weights to ``out``.safetensors, metrics to ``out``.json."""
    settings = seed_everything(seed, threads)
    data = synthetic(seed)
    weights, info = (
        {},
        {"settings": settings, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "r1": {}, "seconds": {}},
    )
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            t0 = time.perf_counter()
            state, r1 = run_lit(data, seed) if case == "lit" else run_d2s(data, seed, case == "d2s_bf16", Path(tmp))
            weights.update(
                {f"{case}/{k}": v.detach().float().contiguous() for k, v in state.items() if v.is_floating_point()}
            )
            info["r1"][case], info["seconds"][case] = r1, round(time.perf_counter() - t0, 2)
    save_file(weights, str(out.with_suffix(".safetensors")))
    out.with_suffix(".json").write_text(json.dumps(info))


def spawn(out: Path, seed: int, threads: int, env: dict | None = None) -> tuple[dict, dict]:
    """Run :func:`worker` in a fresh process; (weights, info)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        str(out),
        "--seed",
        str(seed),
        "--threads",
        str(threads),
    ]
    subprocess.run(cmd, check=True, env={**os.environ, **(env or {})})
    return load_file(str(out.with_suffix(".safetensors"))), json.loads(out.with_suffix(".json").read_text())


def compare(a: tuple[dict, dict], b: tuple[dict, dict], case: str) -> dict:
    """Bitwise equality, max abs weight difference and R@1 difference of one case between two runs."""
    keys = [k for k in a[0] if k.startswith(case + "/")]
    diff = max(float((a[0][k] - b[0][k]).abs().max()) for k in keys)
    return {
        "identical": all(torch.equal(a[0][k], b[0][k]) for k in keys),
        "max_abs_weight_diff": diff,
        "r1_diff": abs(a[1]["r1"][case] - b[1]["r1"][case]),
    }


def summarise(runs: dict, threads: list[int], repeats: int, emulated: tuple | None) -> dict:
    """Per case: repeats at one thread count, first vs every other thread count, native vs emulated ISA."""
    cases = {}
    for case in CASES:
        rep = [compare(runs[t, 0], runs[t, r], case) for t in threads for r in range(1, repeats)]
        thr = [compare(runs[threads[0], 0], runs[t, 0], case) for t in threads[1:]]
        row = {
            "identical_across_repeats": all(c["identical"] for c in rep),
            "max_abs_weight_diff_repeats": max((c["max_abs_weight_diff"] for c in rep), default=0.0),
            "identical_across_thread_counts": all(c["identical"] for c in thr),
            "max_abs_weight_diff_thread_counts": max((c["max_abs_weight_diff"] for c in thr), default=0.0),
            "r1_diff_thread_counts": max((c["r1_diff"] for c in thr), default=0.0),
            "max_abs_weight": max(
                float(v.abs().max()) for k, v in runs[threads[0], 0][0].items() if k.startswith(case + "/")
            ),
            "r1_t2i_train": {str(t): runs[t, 0][1]["r1"][case] for t in threads},
            "seconds": {str(t): runs[t, 0][1]["seconds"][case] for t in threads},
        }
        if emulated is not None:
            c = compare(runs[threads[0], 0], emulated, case)
            row.update(
                identical_on_emulated_avx2=c["identical"],
                max_abs_weight_diff_emulated_avx2=c["max_abs_weight_diff"],
                r1_diff_emulated_avx2=c["r1_diff"],
            )
        cases[case] = row
    return cases


def op_probes(threads: list[int]) -> dict:
    """Single ops of the D2S step at each thread count: which ones change bits (the cause, not the symptom)."""
    g = torch.Generator().manual_seed(0)
    x, gy = torch.randn(128, H, generator=g), torch.randn(128, H, generator=g)  # (B, H) LayerNorm input, upstream grad
    a, w = torch.randn(128, V, generator=g), torch.randn(V, H, generator=g)  # (B, V), (V, H)

    def layer_norm_grads(bf16: bool) -> torch.Tensor:
        ln = torch.nn.LayerNorm(H)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = ln(x.bfloat16() if bf16 else x)  # in the head its input is the bf16 output of the projection
        y.backward(gy.to(y.dtype))
        return torch.cat([ln.weight.grad, ln.bias.grad])  # (2H,) reduced over the batch

    probes = {
        "matmul (B,V)@(V,H)": lambda: a @ w,
        "sum over batch (V,)": lambda: a.sum(0),
        "log_softmax (B,V)": lambda: a.log_softmax(1),
        "layer_norm backward fp32": lambda: layer_norm_grads(False),
        "layer_norm backward bf16 autocast": lambda: layer_norm_grads(True),
    }
    before, out = torch.get_num_threads(), {}
    for name, fn in probes.items():
        res = []
        for t in threads:
            torch.set_num_threads(t)
            res.append(fn())
        out[name] = {
            "identical": all(torch.equal(res[0], r) for r in res[1:]),
            "max_abs_diff": max((float((res[0] - r).abs().max()) for r in res[1:]), default=0.0),
        }
    torch.set_num_threads(before)
    return out


def table(cases: dict, threads: list[int]) -> str:
    """A short plain-text table of the summary."""
    t = "/".join(map(str, threads))
    lines = [
        f"{'case':<10} {'repeats':>9} {'max diff':>9} {'threads ' + t:>12} {'max diff':>9} {'dR@1':>6} {'avx2':>6} "
        f"{'max diff':>9}"
    ]
    for name, c in cases.items():
        yn = lambda b: "same" if b else "differ"  # noqa: E731
        avx = (
            (yn(c["identical_on_emulated_avx2"]), f"{c['max_abs_weight_diff_emulated_avx2']:.1e}")
            if "identical_on_emulated_avx2" in c
            else ("-", "-")
        )
        lines.append(
            f"{name:<10} {yn(c['identical_across_repeats']):>9} {c['max_abs_weight_diff_repeats']:>9.1e} "
            f"{yn(c['identical_across_thread_counts']):>12} "
            f"{c['max_abs_weight_diff_thread_counts']:>9.1e} {c['r1_diff_thread_counts']:>6.2f} {avx[0]:>6} {avx[1]:>9}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-emulated-isa", action="store_true", help="skip the run on an emulated AVX2 CPU")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: one run, see worker()
    args = ap.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.seed, args.threads[0])
        return 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            (t, r): spawn(Path(tmp) / f"t{t}_r{r}", args.seed, t) for t in args.threads for r in range(args.repeats)
        }
        emulated = None if args.no_emulated_isa else spawn(Path(tmp) / "avx2", args.seed, args.threads[0], AVX2)
    cases = summarise(runs, args.threads, args.repeats, emulated)
    first = runs[args.threads[0], 0][1]
    out = {
        "benchmark": "determinism",
        "seed": args.seed,
        "thread_counts": args.threads,
        "repeats": args.repeats,
        "data": {"images": N_IMG, "captions_per_image": CAPS, "dense_dim": D, "vocab": V, "hidden": H},
        "settings": first["settings"],
        "cpu_capability": first["cpu_capability"],
        "emulated_isa": None
        if emulated is None
        else {"env": AVX2, "cpu_capability": emulated[1]["cpu_capability"], "threads": args.threads[0]},
        "cases": cases,
        "op_probes_across_thread_counts": op_probes(args.threads),
        "machine": machine(),
        "torch": torch.__version__,
        "versions": versions(),
        "seconds": round(time.perf_counter() - t0, 1),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(table(cases, args.threads))
    print(
        "ops that change bits with the thread count:",
        [k for k, v in out["op_probes_across_thread_counts"].items() if not v["identical"]] or "none",
    )
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
