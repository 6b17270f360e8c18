"""The prepared GPU study script: its corpus and its plan, checked without a GPU."""

from __future__ import annotations

import json

from tests.helpers import ROOT, load_benchmark, run_script, toy_rows, write_jsonl


def _study():
    return load_benchmark("gpu_study")


def test_replicated_corpus_keeps_ids_and_reviews_apart(tmp_path):
    src = tmp_path / "src"
    write_jsonl(src / "train.jsonl", toy_rows(3, 4, 1, "TR"))
    write_jsonl(src / "validation.jsonl", toy_rows(2, 3, 2, "VA"))
    write_jsonl(src / "test.jsonl", toy_rows(2, 3, 3, "TE"))
    counts = _study().replicated_corpus(src, tmp_path / "big", copies=3)
    assert counts == {"train": 36, "validation": 6, "test": 6}
    rows = [json.loads(line) for line in (tmp_path / "big" / "train.jsonl").open()]
    assert len({r["id"] for r in rows}) == 36
    assert len({r["review_id"] for r in rows}) == 9
    assert (tmp_path / "big" / "test.jsonl").read_text() == (src / "test.jsonl").read_text()


def test_dry_run_plans_every_run(tmp_path):
    out = run_script("benchmarks/gpu_study.py", "--dry-run", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "study.json").read_text())
    arms = {(a["model"], a["trainer"]): a for a in report["arms"]}
    assert set(arms) == {(m, t) for m in ("minilm", "mpnet") for t in ("gpu", "gpu_fast")}
    assert all(a["status"] == "planned" for a in arms.values())
    assert "loop lean" in arms["mpnet", "gpu_fast"]["reason"]
    assert "cache:all-mpnet-base-v2" in arms["mpnet", "gpu"]["reason"]
    assert report["assemble"]["status"] in ("ready", "not possible")
    shipped = (ROOT / "data" / "scr_recs" / "train.jsonl").read_text().splitlines()
    assert report["corpus"]["train"] == report["copies"] * len(shipped)
    assert "| mpnet | gpu_fast | planned" in (tmp_path / "study.md").read_text()
