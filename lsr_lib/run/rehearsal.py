"""Paper-size rehearsal: every stage at 10%, 30% and 100% of MSCOCO on synthetic features, and what each costs.

    python -m lsr_lib.run.rehearsal                      # write the features, run the settings, measure
    python -m lsr_lib.run.rehearsal --settings mscoco10_synthetic --stages 01 02
    python -m lsr_lib.run.rehearsal --collect-only       # only re-read the runs into the result file

For each setting of ``params/rehearsal.yaml`` (the paper profile's recipe, ``extends: paper``):
synthetic features in the released-features layout (``lsr_lib.data.rehearsal``, the fraction
is the number in the setting's dataset name), then stages 01, 02, 03, 04 and 06 through
``lsr_lib.run.pipeline`` exactly as the paper profile runs them (a stage whose results are
current is skipped, so a stopped rehearsal resumes). It then reads back, per setting and stage,
the wall time of each cell (papermill), the stage kernel's peak resident memory (recorded beside
every result file, in its untracked ``timings/`` sibling), and per operation: D2S training step,
validation, vector export; index build and query per engine; into
``results/benchmarks/rehearsal_<device>.json`` with the machine described, and draws
``figures/rehearsal_cost.png`` (cost against size, log-log).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import numpy as np

from ..config.profiles import REPO_ROOT, load_config
from ..results.provenance import git_commit, machine
from ..results.timing import read_with_timings, stage_times
from ..storage.atomic import atomic_write_json

STAGES = ("01", "02", "03", "04", "06")
STAGE_NAMES = {
    "01": "01_cache_dense_features",
    "02": "02_train_sparse_heads",
    "03": "03_analyze_sparse_vectors",
    "04": "04_retrieve_with_inverted_index",
    "06": "06_explore_sparse_vectors",
}
RESULT_OF = {"01": "01_dense_baseline", "02": "02_d2s", "03": "03_analyses", "04": "04_efficiency", "06": "06_explorer"}
N_WORDS = 5000  # the synthetic captions' vocabulary: frequent whole words of BERT-uncased, after the first SKIP_WORDS
SKIP_WORDS = 150  # "the", "and", "was", ...: function words, not what a caption's content is made of


def fraction_of(setting_name: str) -> float:
    """``mscoco30_synthetic`` -> 0.30."""
    m = re.match(r"[a-z]+?(\d+)_", setting_name)
    if not m:
        raise ValueError(
            f"rehearsal setting {setting_name!r}: its dataset name must end in the percentage of MSCOCO, e.g. mscoco30"
        )
    return int(m.group(1)) / 100


def vocabulary_words(n: int = N_WORDS) -> list[str]:
    """Whole lower-case words of the BERT-uncased WordPiece vocabulary, in vocabulary order (frequent first), function
    words skipped."""
    from ..sparse.expansion_control import bert_uncased_tokenizer

    vocab = sorted(bert_uncased_tokenizer("minilm").get_vocab().items(), key=lambda kv: kv[1])
    return [w for w, _ in vocab if w.isascii() and w.isalpha() and len(w) >= 3][SKIP_WORDS : SKIP_WORDS + n]


# the random vocabulary layer's bias: about 60 of 30,522 terms active at the start (see write_vocab_init)
VOCAB_BIAS = -4.0


def write_vocab_init(
    path: Path, vocab_size: int = 30522, hidden: int = 768, seed: int = 0, bias: float = VOCAB_BIAS
) -> None:
    """A random vocabulary layer of distilbert-base-uncased's shape (weights, bias, LayerNorm), for cost only.

    Term logits start with standard deviation about 1.4 (0.05 x sqrt(768)); the bias of -4 leaves about
    0.2% of the terms (some 60) active, the lengths a trained model reaches. A zero bias would start
    with half the vocabulary active, which the bounded training cannot sparsify, and the later stages
    would be timed on vectors no trained model has. (Rewritten when its settings change.)
    """
    import torch
    from safetensors.torch import load_file, save_file

    if path.exists() and float(load_file(str(path))["bias"][0]) == bias:
        return
    g = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "weight": 0.05 * torch.randn(vocab_size, hidden, generator=g),
            "bias": torch.full((vocab_size,), bias),
            "norm_weight": torch.ones(hidden),
            "norm_bias": torch.zeros(hidden),
        },
        str(path),
    )


def prepare(settings: list[str]) -> dict:
    """Write the vocabulary-layer file and each setting's synthetic features (reused when already written)."""
    from ..data.rehearsal import write_synthetic_mscoco

    words = vocabulary_words()
    out = {}
    for name in settings:
        cfg = load_config(f"rehearsal/{name}")
        write_vocab_init(cfg.path(cfg.d2s.vocab_init))
        out[name] = write_synthetic_mscoco(cfg.path(cfg.encoder.features_dir), words, fraction_of(name), seed=cfg.seed)
        print(f"{name}: features in {cfg.encoder.features_dir} ({out[name]['sizes']})", flush=True)
    return out


def run(settings: list[str], stages: tuple[str, ...], progress: bool = True) -> int:
    """Each setting's stages through the pipeline (executed notebooks in runs/rehearsal/<setting>/)."""
    from . import pipeline

    for name in settings:
        argv = [
            "--profile",
            f"rehearsal/{name}",
            "--stages",
            *stages,
            "--out",
            str(REPO_ROOT / "runs" / "rehearsal" / name),
        ] + ([] if progress else ["--no-progress"])
        code = pipeline.main(argv)
        if code:
            return code
    return 0


def _d2s_ops(result: dict, n_pairs: int) -> dict:
    """Per condition: seconds per training step, per validation, and validation against one full epoch (estimated from
    the step)."""
    out = {}
    for cond, r in result["results"]["conditions"].items():
        hist = r.get("history", [])
        steps = [h for h in hist if "train_seconds" in h]
        if not steps:
            continue
        batch = r["config"]["batch_size"]
        per_epoch = max(1, r["steps"] // max(1, len(hist)))
        step_s = float(np.median([h["train_seconds"] / per_epoch for h in steps]))
        full_epoch_steps = math.ceil(n_pairs / batch)
        val_s = (
            float(np.median([h["val_seconds"] for h in hist if "val_seconds" in h]))
            if any("val_seconds" in h for h in hist)
            else None
        )
        epoch_s = step_s * full_epoch_steps
        out[cond] = {
            "steps_run": r["steps"],
            "step_seconds": step_s,
            "full_epoch_steps": full_epoch_steps,
            "full_epoch_seconds_from_steps": epoch_s,
            "validation_seconds": val_s,
            "validation_share_of_epoch": None if val_s is None else val_s / epoch_s,
            "nnz_image_last": hist[-1].get("val", {}).get("nnz_image"),
            "nnz_text_last": hist[-1].get("val", {}).get("nnz_text"),
        }
    return out


def _index_ops(result: dict) -> list[dict]:
    """Stage 04 on the test split: build time, size, p50 latency and QPS per engine (text->image)."""
    keep = (
        "condition",
        "kind",
        "n_docs",
        "build_s",
        "size_mb",
        "latency_p50_ms",
        "latency_p99_ms",
        "qps_1t",
        "recall@10",
    )
    return [{k: r.get(k) for k in keep} for r in result["results"]["test_collection"]]


def collect(settings: list[str]) -> dict:
    """Read back every setting's executed notebooks and result files into one record."""
    from ..data.rehearsal import split_sizes

    rows = {}
    for name in settings:
        cfg = load_config(f"rehearsal/{name}")
        runs = REPO_ROOT / "runs" / "rehearsal" / name
        sizes = split_sizes(fraction_of(name))
        rec = {"fraction": fraction_of(name), "sizes": sizes, "stages": {}}
        for n in STAGES:
            nb, res = runs / f"{STAGE_NAMES[n]}.ipynb", cfg.results_dir / f"{RESULT_OF[n]}.json"
            if not nb.exists() or not res.exists():
                continue
            data = read_with_timings(res)  # with its per-epoch seconds and peak memory (timings/, untracked)
            rec["stages"][n] = {**stage_times(nb, top=4), **data["provenance"].get("memory", {})}
            if n == "02":
                rec["d2s"] = _d2s_ops(data, sizes["train"][1])
            if n == "04":
                rec["index"] = _index_ops(data)
            if n == "01":
                rec["teacher_test_t2i_R@1"] = (
                    data["results"].get("baseline", {}).get("test", {}).get("text_to_image", {}).get("R@1")
                )
        rows[name] = rec
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {
        "benchmark": "rehearsal",
        "device": device,
        "commit": git_commit(),
        "machine": machine(),
        "d2s_bounds": {
            "epochs": cfg.d2s.epochs,
            "max_steps_per_epoch": cfg.d2s.max_steps_per_epoch,
            "batch_size": cfg.d2s.batch_size,
        },
        "settings": rows,
        "growth": growth(rows),
    }
    out["paper_run_estimate"] = estimate_paper_run(out)
    return out


# Assumptions of the GPU estimate (an H100 SXM-class GPU; stated with the numbers, never measured here).
GPU = {
    "name": "H100 SXM-class (assumed)",
    "matmul_tflops": 250.0,
    "memory_tb_s": 3.0,
    "why": (
        "25% of the 989 TFLOP/s dense bf16/fp16 peak for GEMMs of these shapes; 3 of 3.35 TB/s for element-wise passes"
    ),
}
# reads + writes of (2B, V) tensors per step: head activations, log1p/relu, masks, L1, loss, their gradients, AdamW over
# 23.6M weights
ELEMENTWISE_PASSES = 30


def d2s_step_flops(batch: int, dense_dim: int = 256, hidden: int = 768, vocab: int = 30522) -> float:
    """Floating-point operations of one D2S training step (shared head, both sides): forward 2 x rows x
    (d x H + H x V), backward twice that, plus the in-batch (B x V) x (V x B) student scores (x3)."""
    rows = 2 * batch
    head = 2 * rows * (dense_dim * hidden + hidden * vocab)
    return 3 * head + 3 * 2 * batch * batch * vocab


def estimate_paper_run(record: dict, epochs: int = 200, batch: int = 512, vocab: int = 30522) -> dict:
    """The full paper run (MSCOCO, 200 epochs, both conditions) on one GPU: an estimate from operation counts
    under the ``GPU`` assumptions, next to what the same counts give with this machine's measured CPU rate."""
    full = next((r for r in record["settings"].values() if r["fraction"] == 1.0), None)
    if full is None or not full.get("d2s"):
        return {}
    n_pairs, (n_img, n_txt) = full["sizes"]["train"][1], full["sizes"]["val"]
    steps = math.ceil(n_pairs / batch)
    flops = d2s_step_flops(batch)
    bytes_step = ELEMENTWISE_PASSES * 2 * batch * vocab * 4
    gpu_step = flops / (GPU["matmul_tflops"] * 1e12) + bytes_step / (GPU["memory_tb_s"] * 1e12)
    val_flops = 2 * (n_img + n_txt) * (256 * 768 + 768 * vocab) + 2 * n_txt * n_img * vocab
    gpu_val = (
        val_flops / (GPU["matmul_tflops"] * 1e12)
        + 2 * n_txt * n_img * 4 / (GPU["memory_tb_s"] * 1e12)
        + (n_img + n_txt) * vocab * 4 * 3 / (GPU["memory_tb_s"] * 1e12)
    )
    cpu = {c: d["step_seconds"] for c, d in full["d2s"].items()}
    cpu_rate = flops / float(np.median(list(cpu.values())))  # FLOP/s this machine reached on the rehearsal's steps
    return {
        "label": "ESTIMATE from operation counts, not a measurement",
        "gpu": GPU,
        "elementwise_passes": ELEMENTWISE_PASSES,
        "step_flops": flops,
        "steps_per_epoch": steps,
        "epochs": epochs,
        "validation_flops": val_flops,
        "gpu_step_ms": 1e3 * gpu_step,
        "gpu_epoch_s": steps * gpu_step,
        "gpu_validation_s": gpu_val,
        "gpu_per_condition_min": epochs * (steps * gpu_step + gpu_val) / 60,
        "gpu_both_conditions_h": 2 * epochs * (steps * gpu_step + gpu_val) / 3600,
        "cpu_measured_flops_per_s": cpu_rate,
        "cpu_per_condition_h_from_measured_steps": epochs * steps * float(np.median(list(cpu.values()))) / 3600,
    }


def growth(rows: dict) -> dict:
    """Log-log slope of each stage's (and operation's) cost between the two largest settings: 1 = linear in the size."""
    ordered = sorted(rows.values(), key=lambda r: r["fraction"])
    if len(ordered) < 2:
        return {}
    a, b = ordered[-2], ordered[-1]
    slope = lambda x, y: (
        math.log(y / x) / math.log(b["fraction"] / a["fraction"]) if x and y and x > 0 and y > 0 else None
    )
    out = {
        f"stage {n} seconds": slope(a["stages"].get(n, {}).get("seconds"), b["stages"].get(n, {}).get("seconds"))
        for n in STAGES
    }
    out.update(
        {
            f"stage {n} peak RSS": slope(
                a["stages"].get(n, {}).get("peak_rss_mib"), b["stages"].get(n, {}).get("peak_rss_mib")
            )
            for n in STAGES
        }
    )
    for cond in b.get("d2s", {}):
        for op in ("step_seconds", "validation_seconds"):
            out[f"D2S {cond} {op}"] = slope(a.get("d2s", {}).get(cond, {}).get(op), b["d2s"][cond].get(op))
    return {k: (None if v is None else round(v, 2)) for k, v in out.items()}


def figure(record: dict, path: Path) -> None:
    """Cost against size (log-log): each stage's wall time and peak memory, D2S step and validation."""
    from ..results import figures

    figures.apply_style()
    rows = sorted(record["settings"].values(), key=lambda r: r["fraction"])
    x = [r["sizes"]["train"][1] + r["sizes"]["val"][1] + r["sizes"]["test"][1] for r in rows]
    fig, axes = figures.plt.subplots(1, 3, figsize=(15, 4))
    for n in STAGES:
        ys = [r["stages"].get(n, {}).get("seconds") for r in rows]
        if all(y is not None for y in ys):
            axes[0].plot(x, ys, marker="o", label=f"stage {n}")
        ms = [r["stages"].get(n, {}).get("peak_rss_mib") for r in rows]
        if all(m is not None for m in ms):
            axes[1].plot(x, [m / 1024 for m in ms], marker="o", label=f"stage {n}")
    for cond in rows[-1].get("d2s", {}):
        for op, ls in (("step_seconds", "-"), ("validation_seconds", "--"), ("full_epoch_seconds_from_steps", ":")):
            ys = [r.get("d2s", {}).get(cond, {}).get(op) for r in rows]
            if all(y is not None for y in ys):
                axes[2].plot(x, ys, marker="o", ls=ls, label=f"{cond.replace('_', ' ')}: {op.replace('_', ' ')}")
    for ax, title, ylabel in (
        (axes[0], "stage wall time", "seconds"),
        (axes[1], "stage peak resident memory", "GiB"),
        (axes[2], "D2S operations", "seconds"),
    ):
        ref = np.array(x, dtype=float)
        ys = [ln.get_ydata()[0] for ln in ax.get_lines()]
        if ys:
            ax.plot(ref, min(ys) * ref / ref[0], color="grey", lw=0.8, ls=":", label="linear (slope 1)")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="captions in the collection (train + val + test)",
            ylabel=ylabel,
            title=title,
        )
        ax.legend(fontsize=6)
    fig.suptitle(
        f"Paper-size rehearsal on {record['machine'].get('cpu_count')} CPU cores ({record['device']}): cost against "
        "size",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    fig.savefig(path.with_suffix(".pdf"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lsr_lib.run.rehearsal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--settings", nargs="*", help="settings of params/rehearsal.yaml (default: all)")
    ap.add_argument("--stages", nargs="*", default=list(STAGES))
    ap.add_argument(
        "--collect-only", action="store_true", help="only read the finished runs into the result file and figure"
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    names = args.settings or [s.name for s in load_config("rehearsal").sweep]
    if not args.collect_only:
        prepare(names)
        code = run(names, tuple(args.stages), progress=not args.no_progress)
        if code:
            return code
    record = collect(names)
    out = REPO_ROOT / "results" / "benchmarks" / f"rehearsal_{record['device']}.json"
    atomic_write_json(out, record)
    figure(record, REPO_ROOT / "figures" / f"rehearsal_cost_{record['device']}.png")
    print(f"wrote {out.relative_to(REPO_ROOT)} and figures/rehearsal_cost_{record['device']}.png")
    for k, v in record["growth"].items():
        print(f"  growth {k}: slope {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
