"""README renderers that compute something: the comparison with HNSW and the data-scale table."""

from lsr_lib.results.report import against_hnsw, data_scale


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


def test_data_scale_table_shows_mean_and_std_per_size(tmp_path):
    import json

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
