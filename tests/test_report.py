"""The generated pages: renderers that compute something (the comparison with HNSW, the data-scale table), and
the pages as a whole: every block in one page, current, nested in its section, free of run facts (issue 28)."""

import json
import re
import shutil
from pathlib import Path

from lsr_lib.results.report import (
    BLOCK,
    RENDERERS,
    against_hnsw,
    control_effect_at_recall,
    data_scale,
    efficiency_headline,
    pages,
    render,
    update_pages,
    without_headings,
)
from lsr_lib.results.timing import is_duration

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
HEADING = re.compile(r"^(#{1,6}) ", re.M)


def test_against_hnsw_names_the_fastest_engine_reaching_the_target_and_the_ratio():
    m = [
        {
            "n_docs": 10,
            "condition": "with_control",
            "engine": "seismic",
            "target_recall": 0.95,
            "setting": "seismic qc=20",
            "latency_p50_ms": 4.0,
        },
        {
            "n_docs": 10,
            "condition": "with_control",
            "engine": "numba",
            "target_recall": 0.95,
            "setting": "numba",
            "latency_p50_ms": 8.0,
        },
        {
            "n_docs": 10,
            "condition": "with_control",
            "engine": "bmp",
            "target_recall": 0.95,
            "setting": None,
            "latency_p50_ms": float("nan"),
        },
        {
            "n_docs": 10,
            "condition": "dense teacher",
            "engine": "faiss_hnsw",
            "target_recall": 0.95,
            "setting": "faiss_hnsw ef=32",
            "latency_p50_ms": 2.0,
        },
        {
            "n_docs": 10,
            "condition": "dense teacher",
            "engine": "faiss_hnsw",
            "target_recall": 0.9,
            "setting": "faiss_hnsw ef=16",
            "latency_p50_ms": 1.0,
        },
    ]
    (line,) = against_hnsw(m, 10)
    assert "seismic qc=20 at 4.00 ms" in line and "2.0x the dense teacher's faiss_hnsw ef=32 (2.00 ms)" in line


def test_control_effect_at_equal_recall_pairs_one_engine_on_the_same_documents():
    def row(cond, engine, p50, target=0.95):
        return {"n_docs": 10, "condition": cond, "engine": engine, "target_recall": target, "latency_p50_ms": p50}

    m = [
        row("with_control", "seismic", 2.0),
        row("without_control", "seismic", 5.0),
        row("with_control", "seismic", 1.0, target=0.9),  # another recall target: not this line's
        row("with_control · independent terms", "seismic", 3.0),
        row("without_control · independent terms", "seismic", 3.3),
        row("with_control", "bmp", 1.0),
        row("without_control", "bmp", float("nan")),  # never reached the target: no pair
    ]
    (line,) = control_effect_at_recall(m, 10)
    assert "seismic 2.00 against 5.00 ms (2.5x)" in line
    assert "seismic (independent terms) 3.00 against 3.30 ms (1.1x)" in line and "bmp" not in line


def test_the_readme_efficiency_line_takes_each_models_fastest_engine_at_the_largest_size_on_the_same_documents(
    tmp_path,
):
    def row(n, cond, engine, p50, recall=0.96, setting=None, target=0.95):
        return {
            "n_docs": n,
            "condition": cond,
            "engine": engine,
            "setting": setting or engine,
            "target_recall": target,
            "latency_p50_ms": p50,
            "recall": recall,
            "best_recall": recall,
        }

    big = 1_000
    matched = [
        row(big, "with_control", "kannolo", 1.0, 0.97, "kannolo ef=256"),
        row(big, "with_control", "kannolo", 0.5, 0.91, "kannolo ef=128", target=0.9),  # another target
        row(big, "with_control", "numba_blocked", 12.0, 1.0),
        row(big, "with_control", "bmp", float("nan"), 0.94),  # never reached
        row(big, "with_control · independent terms", "kannolo", 0.1),  # another collection: not the headline's
        row(big, "without_control", "seismic", 3.0, 0.955, "seismic qc=10"),
        row(big, "without_control", "numba_blocked", 24.0, 1.0),
        row(big, "dense teacher", "faiss_hnsw", 4.0, 0.964, "faiss_hnsw ef=512"),
        row(big, "dense teacher", "faiss_flat", 88.0, 1.0),
        row(big, "stage 07 choice epochs6", "kannolo", 2.0, 0.951, "kannolo ef=64"),  # stage 07's chosen model
        row(10, "with_control", "kannolo", 0.01),  # a smaller size
        row(10, "dense teacher", "faiss_hnsw", 0.02),
    ]
    (tmp_path / "04_efficiency.json").write_text(json.dumps({"results": {"recall_matched": matched}}))
    text = efficiency_headline(tmp_path)
    assert "Efficiency at 1,000 documents" in text
    assert "| D2S, with control | kannolo ef=256 | 1.00 | 0.970 | 12.00 | 0.25x |" in text
    assert "| D2S, without control | seismic qc=10 | 3.00 | 0.955 | 24.00 | 0.75x |" in text
    assert "| dense teacher | faiss_hnsw ef=512 | 4.00 | 0.964 | 88.00 | 1x |" in text
    assert "| D2S, stage 07 choice epochs6 | kannolo ef=64 | 2.00 | 0.951 |  | 0.50x |" in text
    (tmp_path / "04_efficiency.json").write_text(json.dumps({"results": {"recall_matched": []}}))
    assert "run `make bench`" in efficiency_headline(tmp_path)


def test_data_scale_table_shows_mean_and_std_per_size(tmp_path):
    summary = [
        {
            "condition": "with_control",
            "point": p,
            "relative_size": r,
            "pairs": 100 * r,
            "n": 3,
            "T->I R@1": 10.0 * r,
            "T->I R@1 std": 0.5,
            "retention R@1": 0.5 * r,
            "retention R@1 std": 0.02,
            "T->I R@10": 40.0,
            "T->I R@10 std": 1.0,
            "retention R@10": 0.8,
            "retention R@10 std": 0.01,
            "FLOPs": 7.0,
            "FLOPs std": 1.0,
            "nnz caption": 50.0,
            "nnz caption std": 2.0,
            "nnz image": 40.0,
            "nnz image std": 3.0,
        }
        for p, r in (("0.5", 0.5), ("1", 1.0), ("1+1v", 2.0))
    ]
    growth = {
        "with_control": {
            "smallest": "0.5",
            "retention_R@1_smallest": 0.25,
            "largest": "1+1v",
            "retention_R@1_largest": 1.0,
            "points_per_doubling_R@1": 37.5,
        }
    }
    (tmp_path / "07_data_scale.json").write_text(json.dumps({"results": {"summary": summary, "growth": growth}}))
    text = data_scale(tmp_path)
    assert "| with control | 50% | 50 | 3 | 5.0 ± 0.5 | 25.0 ± 2.0 |" in text
    assert (
        "| with control | 100% (stage 02) |" in text and "| with control | 100% + 1 augmented view(s) | 200 |" in text
    )
    assert "from 25.0% (0.5) to 100.0% (1+1v), +37.5 points per doubling" in text


def copy_pages(to: Path) -> None:
    for page in pages(ROOT):
        dest = to / page.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, dest)


def test_every_renderer_has_its_block_in_a_page():
    names = {m.group("name") for page in pages(ROOT) for m in BLOCK.finditer(page.read_text())}
    assert names == set(RENDERERS), f"generated tables no page holds: {sorted(set(RENDERERS) - names)}"


def test_a_hand_edited_or_stale_table_in_any_page_is_found(tmp_path, monkeypatch):
    from lsr_lib.storage import code_fingerprint as cf

    copy_pages(tmp_path)
    results = ROOT / "results" / "default"
    # the pages were generated where the results were made: judge their currency notes with that CPU's kernels, so
    # that this test passes on a machine whose torch dispatches to another instruction set (AVX512 vs AVX2)
    made_on = json.loads((results / "02_d2s.json").read_text())["inputs"]["env"]["torch-cpu"]
    monkeypatch.setattr(cf, "torch_cpu_capability", lambda: made_on)
    assert update_pages(results, tmp_path, write=False) == []
    # the committed numbers, as the tables show them; each example then changes one digit
    m = json.loads((results / "seeds.json").read_text())["metrics"]
    teacher, ctrl = m["dense teacher, test T->I R@1"], m["with_control, test T->I R@1"]
    shown = {k: f"{v['mean']:.2f} ± {v['std']:.2f}" for k, v in (("t", teacher), ("c", ctrl))}
    moved = {k: f"{v['mean'] + 0.01:.2f} ± {v['std']:.2f}" for k, v in (("t", teacher), ("c", ctrl))}
    for page, old, new in [
        (
            "docs/results.md",
            f"| dense teacher, test T->I R@1 | {shown['t']} |",
            f"| dense teacher, test T->I R@1 | {moved['t']} |",
        ),
        ("README.md", f"| D2S, with control | {shown['c']} |", f"| D2S, with control | {moved['c']} |"),
    ]:
        text = (tmp_path / page).read_text()
        assert text.count(old) == 1, f"{page} no longer shows {old!r}: update this test's example"
        (tmp_path / page).write_text(text.replace(old, new))
    assert update_pages(results, tmp_path, write=False) == ["README.md", "docs/results.md"]
    assert update_pages(results, tmp_path) == ["README.md", "docs/results.md"]  # rewritten
    assert update_pages(results, tmp_path, write=False) == []


def test_pages_nest_their_sections_and_generated_blocks_open_none():
    for page in pages(ROOT):
        text = page.read_text()
        for m in BLOCK.finditer(text):
            assert not HEADING.search(m.group("body")), f"{page.name}: block {m.group('name')} opens a section"
        levels = [len(h.group(1)) for h in HEADING.finditer(FENCE.sub("", text))]
        assert levels and levels[0] == 1 and levels.count(1) == 1, f"{page.name}: one title first"
        assert all(b <= a + 1 for a, b in zip(levels, levels[1:])), f"{page.name}: a heading skips a level"
    assert without_headings("a\n## The effect (x)\nb\n") == "a\n**The effect (x)**\nb\n"


def _perturb_run_facts(node):
    """Every time, host kernel, peak memory and duration in a result document, changed."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "time_utc":
                out[k] = "2099-01-01T00:00:00Z"
            elif k == "platform":
                out[k] = "Linux-another-kernel"
            elif k == "memory" or k.startswith("peak_rss"):
                out[k] = {"peak_rss_mib": 1.0} if k == "memory" else 1.0
            elif is_duration(k) and isinstance(v, (int, float)):
                out[k] = v + 1.0
            else:
                out[k] = _perturb_run_facts(v)
        return out
    return [_perturb_run_facts(v) for v in node] if isinstance(node, list) else node


def test_the_pages_do_not_change_when_only_the_run_facts_do(tmp_path):
    shutil.copytree(ROOT / "results", tmp_path / "results")
    for path in (tmp_path / "results" / "default").rglob("*.json"):
        if "benchmarks" not in path.parts:
            path.write_text(json.dumps(_perturb_run_facts(json.loads(path.read_text())), indent=2))
    for page in pages(ROOT):
        text = page.read_text()
        if BLOCK.search(text):
            assert render(text, tmp_path / "results" / "default") == render(text, ROOT / "results" / "default"), page


def test_the_headline_pairs_retention_per_seed_and_judges_the_goal(tmp_path):
    from lsr_lib.results.headline import headline

    def metric(values):
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return {"mean": mean, "std": std, "n": len(values), "values": {str(k): v for k, v in enumerate(values)}}

    def write(with_r1, with_flops):
        summary = {
            "seeds": [0, 1],
            "metrics": {
                "dense teacher, test T->I R@1": metric([20.0, 10.0]),
                "with_control, test T->I R@1": metric(with_r1),
                "with_control, test FLOPs": metric(with_flops),
                "without_control, test T->I R@1": metric([10.0, 5.0]),
                "without_control, test FLOPs": metric([10.0, 10.0]),
            },
            "control_effect": {},
        }
        (tmp_path / "seeds.json").write_text(json.dumps(summary))
        return headline(tmp_path)

    text = write([19.0, 9.6], [4.0, 5.0])  # 95% and 96% of each seed's own teacher, at 0.45x the FLOPs
    assert "| D2S, with control | 14.30 ± 6.65 |" in text and "| 95.5 ± 0.7 |" in text
    assert "D2S with control: 95.5% at 0.45x the FLOPs, **reached**" in text
    assert "**not reached**" in write([19.0, 9.0], [4.0, 5.0])  # 92.5%: below the goal
    assert "**not reached**" in write([19.0, 9.6], [5.0, 6.0])  # 0.55x the FLOPs: above the goal


def test_the_headline_sets_the_held_out_style_beside_the_in_style_test_on_the_same_emoji(tmp_path):
    from lsr_lib.results.headline import headline

    def metric(values):
        return {"mean": sum(values) / len(values), "std": None, "n": len(values), "values": {"0": values[0]}}

    summary = {
        "seeds": [0],
        "metrics": {
            "dense teacher, test T->I R@1": metric([20.0]),
            "dense teacher, heldout T->I R@1": metric([10.0]),
            "dense teacher, heldout T->I R@10": metric([40.0]),
            "dense teacher, test_matched_to_heldout T->I R@1": metric([30.0]),
            "dense teacher, test_matched_to_heldout T->I R@10": metric([80.0]),
        },
        "control_effect": {},
    }
    (tmp_path / "seeds.json").write_text(json.dumps(summary))
    text = headline(tmp_path)
    assert "| dense teacher | 30.00 | 10.00 | 80.00 | 40.00 | 50.0 |" in text  # 40 / 80, on the same emoji
    del summary["metrics"]["dense teacher, heldout T->I R@10"]
    (tmp_path / "seeds.json").write_text(json.dumps(summary))
    assert "Cross-style" not in headline(tmp_path)  # no held-out style: no table


def test_before_after_pairs_ratios_per_seed_and_names_what_was_not_measured(tmp_path):
    from lsr_lib.results.before_after import BEFORE_FILE, before_after_lines, rows

    def summary(teacher, with_r1, flops_w, flops_wo):
        m = {
            "dense teacher, test T->I R@1": {"values": dict(zip("012", teacher))},
            "with_control, test T->I R@1": {"values": dict(zip("012", with_r1))},
            "with_control, test FLOPs": {"values": dict(zip("012", flops_w))},
            "without_control, test FLOPs": {"values": dict(zip("012", flops_wo))},
        }
        return {"metrics": m}

    before = summary([20, 10, 20], [10, 5, 10], [2, 2, 2], [4, 4, 4])  # retention 50 % in every seed
    after = summary([20, 40, 20], [19, 38, 19], [1, 3, 1], [4, 4, 4])  # 95 % in every seed; unpaired: 25.3/26.7
    got = {label: (b, a) for label, b, a in rows(before, after)}
    assert got["dense teacher, test T->I R@1"] == ("16.67 ± 5.77 (3 seeds)", "26.67 ± 11.55 (3 seeds)")
    assert got["D2S with control, retention of the teacher's T->I R@1 (%)"] == (
        "50.0 ± 0.0 (3 seeds)",
        "95.0 ± 0.0 (3 seeds)",
    )
    assert got["D2S with control, FLOPs / without control's"][1] == "0.42 ± 0.29 (3 seeds)"  # 0.25, 0.75, 0.25
    assert got["dense teacher, held-out style R@10 / in-style R@10 (%)"] == ("not measured", "not measured")
    assert before_after_lines(tmp_path) == []  # no frozen file: no table
    (tmp_path / BEFORE_FILE).write_text(
        json.dumps({"source": {"commit": "abcdef0123"}, "seeds": before, "counts": {"train": {"captions": 5056}}})
    )
    (tmp_path / "seeds.json").write_text(json.dumps(after))
    text = "\n".join(before_after_lines(tmp_path))
    assert (
        "5,056 training pairs" in text
        and "abcdef0" in text
        and "| 50.0 ± 0.0 (3 seeds) | 95.0 ± 0.0 (3 seeds) |" in text
    )


def test_the_main_job_time_says_whether_it_was_a_fresh_clone(tmp_path):
    """A timing from runs of every stage in a working copy is not presented as `make main` from a fresh clone."""
    import json

    from lsr_lib.results.cost import main_job_time

    machine = {"cpu": "AMD EPYC", "cpu_count": 2, "memory_gib": 23.5, "python": "3.11.7"}
    stages = {"01_cache_dense_features": {"seconds": 778.0}, "05_image_suggestion": {"seconds": 2400.0}}
    base = {"machine": machine, "commit": "abc", "stages": stages, "stages_seconds_total": 3178.0, "label": "worktree"}
    (tmp_path / "benchmarks").mkdir()
    path, results = tmp_path / "benchmarks" / "main_job_time.json", tmp_path / "default"  # results/<profile>
    path.write_text(json.dumps({**base, "fresh_clone": False}))
    text = main_job_time(results)
    assert "not from a fresh clone" in text and "01 12 min 58 s, 05 40 min 0 s, 52 min 58 s in all" in text
    fresh = {
        **base,
        "wall_seconds": 60.0,
        "setup_seconds": 5.0,
        "cold_seconds": 65.0,
        "rerun_nothing_changed_seconds": 1,
    }
    path.write_text(json.dumps(fresh))
    assert main_job_time(results).startswith("One timed run from a fresh clone")
    assert "`make setup` into an empty `.venv` 5 s" in main_job_time(results)
    path.write_text(json.dumps({**fresh, "label": "on another CPU: every stage reran"}))  # why it took so long, said
    assert "commit abc; on another CPU: every stage reran): `make setup`" in main_job_time(results)
    unmeasured = {**fresh, "setup_seconds": None, "cold_seconds": None, "rerun_nothing_changed_seconds": None}
    path.write_text(json.dumps(unmeasured))  # benchmarks/main_job_time.py run without --setup-s: said, not a crash
    assert "`.venv` (not measured)" in main_job_time(results)


def test_before_after_says_whether_a_change_is_beyond_the_seed_spread():
    from lsr_lib.results.before_after import change

    assert "within the seed spread" in change([73.5, 71.0, 76.0], [74.7, 73.1, 76.3])  # the retention: noise
    assert "within the seed spread" in change([16.5, 17.4, 18.6], [18.89, 18.92, 18.86])  # the teacher: p = 0.15
    assert "**beyond the seed spread**" in change([16.5, 16.6, 16.4], [18.89, 18.92, 18.86])
    assert "within the seed spread" in change([16.5, 16.6, 16.4], [16.6, 16.4, 16.7])  # a perturbed after
    assert "**beyond the seed spread**" in change([50.0, 50.0], [95.0, 95.0]) and change([1.0, 1.0], [1.0, 1.0]) == (
        "no change"
    )
    assert change([50.0], [95.0, 95.0]).startswith("not tested") and "before" in change([], [1.0, 2.0])


def test_scale_engines_picks_each_engines_fastest_setting_at_the_recall_target(tmp_path):
    from lsr_lib.results.report import scale_engines

    def row(cond, kind, search, p50, recall):
        return {
            "condition": cond,
            "kind": kind,
            "build": {},
            "search": search,
            "build_s": 1.0,
            "size_mb": 2.0,
            "latency_p50_ms": p50,
            "latency_p99_ms": 2 * p50,
            "qps_1t": 100.0,
            "qps_2t": 150.0,
            "recall@10": recall,
        }

    rows = [
        {"condition": "with_control", "step": "encode", "nnz_per_doc": 40.0, "distinct_terms": 1234},
        row("with_control", "kannolo", {"ef_search": 16}, 0.2, 0.90),  # fastest, under the target
        row("with_control", "kannolo", {"ef_search": 32}, 0.3, 0.96),
        row("with_control", "kannolo", {"ef_search": 64}, 0.5, 0.99),
        row("with_control", "bmp", {"alpha": 0.8}, 1.0, 0.80),  # never reaches it
        row("dense teacher", "faiss_hnsw", {"ef_search": 64}, 0.6, 0.95),
    ]
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    doc = {"n_docs": 1000, "machine": {"cpu": "x", "cpu_count": 2}, "rows": rows}
    (bench / "scale_engines_1000.json").write_text(json.dumps(doc))
    text = scale_engines(tmp_path / "default")
    assert "| with control | kannolo | kannolo ef_search=32 | 1.0 | 2.0 | 0.30 | 0.60 |" in text
    assert "| with control | bmp | not reached (best recall@10 0.800, bmp alpha=0.8)" in text
    assert "fastest is kannolo ef_search=32 at 0.30 ms p50, 0.5x the dense teacher's faiss_hnsw" in text
    rows[2]["recall@10"] = 0.949  # a perturbed recall moves the choice to the slower setting
    (bench / "scale_engines_1000.json").write_text(json.dumps(doc))
    assert "kannolo ef_search=64 | 1.0 | 2.0 | 0.50" in scale_engines(tmp_path / "default")
