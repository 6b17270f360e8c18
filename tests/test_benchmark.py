"""Benchmark pieces (variants, slices, baselines) and the smoke suite end to end."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from scrclf.data.records import Record, read_records
from scrclf.evaluation import suites as benchmark
from scrclf.evaluation.baselines import (
    EVIDENCE_CUES,
    THEME_CUES,
    CueTable,
    KeywordBaseline,
    PriorBaseline,
    TfidfLogRegBaseline,
    cue_table_markdown,
)
from scrclf.evaluation.evaluate import file_sha256, load_eval_data, score
from scrclf.evaluation.suites import _container
from scrclf.inference.classifier import file_sha256 as inference_sha256
from scrclf.tasks import TaskSet
from tests.helpers import ROOT, compose_train, run_script, write_jsonl


@pytest.fixture(scope="module")
def tasks() -> TaskSet:
    cfg = compose_train([])
    return TaskSet.from_config(cfg.task.tasks)


def _records(rows: list[dict]) -> list[Record]:
    return [Record(dict(r), "mem.jsonl", i) for i, r in enumerate(rows, start=1)]


SAMPLE = _records(
    [
        {
            "id": "a1",
            "review_id": "R1",
            "text": "The Board should Review its Escalation procedure.",
            "finding": "Practitioners Disagreed about thresholds.",
            "addressee": "board",
            "review_year": 2011,
        },
        {
            "id": "a2",
            "review_id": "R1",
            "text": "Health visitors should record every contact "
            "with the father in the electronic record.",
            "finding": None,
            "addressee": "health",
            "review_year": "2015",
        },
        {
            "id": "a3",
            "review_id": "R2",
            "text": "Police should attend strategy discussions.",
            "finding": "Police were absent.",
            "addressee": "police",
            "review_year": 2019,
        },
        {
            "id": "a4",
            "review_id": "R3",
            "text": "All agencies should remind staff.",
            "finding": None,
            "addressee": None,
            "review_year": "unknown",
        },
    ]
)


# -------------------------------------------------------------------- robustness variants


def test_variants_change_only_what_they_say():
    no_finding = benchmark.without_finding(SAMPLE)
    assert all(r.data["finding"] is None for r in no_finding)
    assert [r.data["text"] for r in no_finding] == [r.data["text"] for r in SAMPLE]
    assert SAMPLE[0].data["finding"] is not None  # originals untouched

    lower = benchmark.lowercased(SAMPLE)
    assert lower[0].data["text"] == SAMPLE[0].data["text"].lower()
    assert lower[0].data["finding"] == SAMPLE[0].data["finding"].lower()
    assert lower[1].data["finding"] is None

    cut = benchmark.truncated(SAMPLE, 4)
    assert cut[1].data["text"] == "Health visitors should record"
    assert cut[0].data["finding"] == SAMPLE[0].data["finding"]
    assert (cut[2].line, cut[2].file) == (SAMPLE[2].line, SAMPLE[2].file)


def test_typos_are_seeded_per_item_and_keep_word_edges():
    one = benchmark.with_typos(SAMPLE, rate=0.5, seed=7)
    two = benchmark.with_typos(list(reversed(SAMPLE)), rate=0.5, seed=7)
    assert [r.data["text"] for r in one] == [r.data["text"] for r in reversed(two)]
    other = benchmark.with_typos(SAMPLE, rate=0.5, seed=8)
    assert [r.data["text"] for r in one] != [r.data["text"] for r in other]
    unchanged = benchmark.with_typos(SAMPLE, rate=0.0, seed=7)
    assert [r.data for r in unchanged] == [r.data for r in SAMPLE]

    text = " ".join(["safeguarding"] * 200 + ["to", "of", "the"])
    damaged = benchmark.typo_text(text, 1.0, random.Random(0)).split()
    assert damaged[-3:] == ["to", "of", "the"]  # short words are left alone
    assert all(w[0] == "s" and w[-1] == "g" for w in damaged[:-3])
    assert sum(w != "safeguarding" for w in damaged[:-3]) > 150
    assert {len(w) for w in damaged[:-3]} <= {11, 12, 13}


# ------------------------------------------------------------------------------ slices


def test_slices_by_addressee_skip_small_groups_with_a_note():
    rows = [{"addressee": a} for a in ["board"] * 3 + ["police"] * 2 + ["health"] + [None]]
    slices, notes = benchmark.slices_by_value(rows, "addressee", min_items=2)
    assert [(name, idx.tolist()) for name, idx in slices] == [
        ("board", [0, 1, 2]),
        ("police", [3, 4]),
    ]
    assert any("health" in n for n in notes) and any("1 items without" in n for n in notes)


def test_slices_by_era_use_inclusive_bins():
    rows = [r.data for r in SAMPLE]
    slices, notes = benchmark.slices_by_era(rows, "review_year")
    assert [(name, idx.tolist()) for name, idx in slices] == [
        ("<=2012", [0]),
        ("2013-2017", [1]),
        (">=2018", [2]),
    ]
    assert any("not a year" in n for n in notes)
    custom, _ = benchmark.slices_by_era(rows, bins=[{"min": 2011, "max": 2015}])
    assert custom[0][0] == "2011-2015" and custom[0][1].tolist() == [0, 1]


# --------------------------------------------------------------------------- baselines


def test_cue_matching_rules():
    table = CueTable({"a": ("supervis",), "b": ("NICE",), "c": ("refer ",)})
    assert table.hits("Regular supervision and supervisors")["a"] == 1
    assert table.hits("unsupervised")["a"] == 0  # cues start a word
    assert table.hits("follow NICE guidance")["b"] == 1
    assert table.hits("a nice idea")["b"] == 0  # acronyms match in capitals only
    assert table.hits("Refer the family")["c"] == 1
    assert "| `research` |" in cue_table_markdown()


def test_documented_cue_tables_are_the_ones_used():
    doc = (ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")
    assert cue_table_markdown() in doc


def test_cue_tables_use_codebook_labels(tasks):
    assert set(THEME_CUES) == set(tasks["themes"].labels)
    assert set(EVIDENCE_CUES) <= set(tasks["evidence"].labels)


def test_keyword_rules_follow_the_codebook(tasks):
    rows = [
        {"text": "Practitioners should receive regular supervision.", "finding": None},
        {"text": "Agencies should follow NICE guidance on neglect.", "finding": None},
        {
            "text": "Research shows fathers are overlooked; services should engage fathers.",
            "finding": None,
        },
        {"text": "The board should remind staff.", "finding": "In this case the GP knew."},
        {"text": "The board should remind staff.", "finding": None},
        {
            "text": "Redesign the system so that a referral cannot be closed without a visit.",
            "finding": None,
        },
    ]
    train = [
        {"themes": ["procedures_policy"], "evidence": "single_case", "action_strength": "weak"}
    ] * 3
    kw = KeywordBaseline(tasks).fit(train)
    logits = kw.logits(rows)
    from scrclf.calibration import decide, probabilities

    def decisions(name):
        task = kw.tasks[name]
        return decide(task, probabilities(task, logits[name]))

    themes = decisions("themes")
    labels = tasks["themes"].labels
    assert themes[0, labels.index("supervision_support")] == 1
    assert themes[2, labels.index("child_family_engagement")] == 1
    assert themes[4].sum() == 1 and themes[4, labels.index("procedures_policy")] == 1
    evidence = [tasks["evidence"].labels[i] for i in decisions("evidence")]
    assert evidence == [
        "none_stated",
        "guidance",
        "research",
        "single_case",
        "none_stated",
        "none_stated",
    ]
    strength = [tasks["action_strength"].labels[i] for i in decisions("action_strength")]
    assert strength[0] == "intermediate" and strength[4] == "weak" and strength[5] == "strong"


def _macro(system, data, tasks_):
    metrics, _ = score(system.tasks, system.logits(data.rows), data)
    return {t: metrics[t]["macro_f1"] for t in tasks_.names}


def test_baselines_on_the_toy_corpus(toy_corpus, tasks):
    train = load_eval_data(toy_corpus / "train.jsonl", tasks, name="train", require_labels=True)
    test = load_eval_data(toy_corpus / "test.jsonl", tasks, name="test")
    prior = PriorBaseline(tasks).fit(train.rows)
    keywords = KeywordBaseline(tasks).fit(train.rows)
    tfidf = TfidfLogRegBaseline(tasks).fit(train.rows)
    p, k, t = (_macro(b, test, tasks) for b in (prior, keywords, tfidf))
    # The prior predicts the majority label everywhere.
    majority = tasks["action_strength"].labels[int(np.argmax(prior.freq["action_strength"]))]
    assert p["action_strength"] == pytest.approx(
        (
            2
            * sum(r["action_strength"] == majority for r in test.rows)
            / (len(test.rows) + sum(r["action_strength"] == majority for r in test.rows))
        )
        / 3
    )
    for task in tasks.names:
        assert t[task] > p[task] + 0.3, (task, t, p)
    # The toy labels are signalled by words some cue phrases share.
    assert k["themes"] > p["themes"] + 0.3
    assert k["action_strength"] > p["action_strength"] + 0.3


# ----------------------------------------------------------------------- smoke suite


def _smoke_cfg(corpus, out, models=(), extra=()):
    return compose_train(
        [
            f"data.dir={corpus}",
            f"out_dir={out}",
            f"systems.models=[{','.join(str(m) for m in models)}]",
            *extra,
        ],
        config_name="benchmark/smoke",
    )


def test_smoke_suite_end_to_end(tiny_run, toy_corpus, tmp_path, no_network, capfd):
    rows = [json.loads(line) for line in (toy_corpus / "test.jsonl").read_text().splitlines()]
    # a double-coded sample of the test split: coder A as annotated, coder B differing
    double = []
    for i, row in enumerate(rows[:40]):
        a = {k: row[k] for k in ("themes", "evidence", "action_strength")}
        b = dict(a, action_strength="weak" if i % 3 == 0 else a["action_strength"])
        double.append({"id": row["id"], "coder_a": a, "coder_b": b})
    double_file = write_jsonl(tmp_path / "double.jsonl", double)
    external_rows = []
    for row in rows[:30]:
        renamed = {("ref" if k == "id" else k): v for k, v in row.items() if k != "evidence"}
        renamed["action_strength"] = renamed["action_strength"].upper()
        external_rows.append(renamed)
    external = write_jsonl(tmp_path / "other_annotations.jsonl", external_rows)
    out = tmp_path / "bench"
    cfg = _smoke_cfg(
        toy_corpus,
        out,
        [tiny_run],
        [
            f"data.external={external}",
            "data.external_columns.id=ref",
            f"agreement.file={double_file}",
        ],
    )
    assert cfg.suite == "smoke" and cfg.bootstrap.resamples == 100
    capfd.readouterr()
    written = benchmark.run_benchmark(cfg, command="pytest smoke")
    assert written == out
    err = capfd.readouterr().err
    assert "predicting 1/" in err and f"{tiny_run.name} on test (" in err
    assert err.rstrip().endswith("done")
    assert {p.name for p in out.iterdir()} == {
        "leaderboard.md",
        "leaderboard.json",
        "results.json",
        "provenance.json",
        "suite.yaml",
        "headline.png",
        "profile",
        "files",
    }
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    board = json.loads((out / "leaderboard.json").read_text())
    systems = [s["name"] for s in board["systems"]]
    assert systems == [tiny_run.name, "prior", "keywords", "tfidf_logreg"]
    names = [d["name"] for d in board["datasets"]]
    assert names[:2] == ["test", "external:other_annotations"]
    assert {"test:no_finding", "test:lowercase", "test:typos_20pct", "test:first_8_words"} <= set(
        names
    )
    assert any(n.startswith("test[addressee=") for n in names)
    assert any(n.startswith("test[era ") for n in names)
    ext = next(d for d in board["datasets"] if d["kind"] == "external")
    assert ext["tasks"] == ["themes", "action_strength"]
    assert any("evidence" in n for n in ext["notes"])
    assert any("'WEAK' as 'weak'" in n for n in ext["notes"])
    assert any("fewer than 10" in n for n in ext["notes"])  # 30 items from 2 reviews

    # every evaluated file has a full report per model
    for dataset, folder in (
        ("test", "test"),
        ("external:other_annotations", "external_other_annotations"),
    ):
        report = out / "files" / folder / tiny_run.name
        assert {
            "report.md",
            "metrics.json",
            "predictions.csv",
            "predictions.jsonl",
            "errors.md",
        } <= {p.name for p in report.iterdir()}
        assert (report / "profile" / "profile.md").is_file()
        assert (report / "confusion_themes.png").is_file()
        items = (report / "predictions.jsonl").read_text().splitlines()
        assert len(items) == (30 if dataset.startswith("external") else len(rows))
        assert f"files/{folder}/{tiny_run.name}/report.md" in (out / "leaderboard.md").read_text()
    ext_items = [
        json.loads(x)
        for x in (
            out / "files" / "external_other_annotations" / tiny_run.name / "predictions.jsonl"
        )
        .read_text()
        .splitlines()
    ]
    assert [i["id"] for i in ext_items] == [r["ref"] for r in external_rows]
    assert "evidence" not in ext_items[0]

    # the model as a third coder beside the two humans, on the same resamples
    agreement = board["agreement"]["systems"][tiny_run.name]
    assert agreement["n_items"] == 40
    pairs = {tuple(p["coders"]): p["tasks"] for p in agreement["pairs"]}
    assert set(pairs) == {("coder_a", "coder_b"), ("model", "coder_a"), ("model", "coder_b")}
    from sklearn.metrics import cohen_kappa_score

    human = cohen_kappa_score(
        [d["coder_a"]["action_strength"] for d in double],
        [d["coder_b"]["action_strength"] for d in double],
    )
    assert pairs[("coder_a", "coder_b")]["action_strength"]["kappa"]["value"] == pytest.approx(
        human
    )

    entries = {(e["system"], e["dataset"], e["task"]): e for e in board["entries"]}
    for system in systems:
        for task in ("themes", "evidence", "action_strength", "mean"):
            e = entries[(system, "test", task)]
            low, high = e["macro_f1_interval"]
            assert low <= e["macro_f1"] + 1e-9 and e["macro_f1"] <= high + 1e-9
            assert e["gap_to_best_baseline"]["baseline"] in ("prior", "keywords", "tfidf_logreg")
        assert (system, "external:other_annotations", "evidence") not in entries
    best = max(
        ("prior", "keywords", "tfidf_logreg"),
        key=lambda b: entries[(b, "test", "mean")]["macro_f1"],
    )
    model_mean = entries[(tiny_run.name, "test", "mean")]
    assert model_mean["gap_to_best_baseline"]["baseline"] == best
    assert model_mean["gap_to_best_baseline"]["value"] == pytest.approx(
        model_mean["macro_f1"] - entries[(best, "test", "mean")]["macro_f1"]
    )
    # Per task, the micro-F1 gap too, to the same baseline (the one best on macro-F1).
    model_themes = entries[(tiny_run.name, "test", "themes")]
    gap = model_themes["gap_to_best_baseline"]
    base_themes = entries[(gap["baseline"], "test", "themes")]
    assert gap["micro_f1"]["value"] == pytest.approx(
        model_themes["micro_f1"] - base_themes["micro_f1"]
    )
    low, high = gap["micro_f1"]["interval"]
    assert low <= gap["micro_f1"]["value"] + 1e-9 <= high + 2e-9
    assert "micro_f1" not in model_mean["gap_to_best_baseline"]
    lower = entries[("tfidf_logreg", "test:lowercase", "mean")]
    assert lower["change_vs_clean"]["value"] == pytest.approx(0.0)  # toy text is lower case
    assert lower["unchanged"] is True
    assert any(f"test:lowercase cannot change {tiny_run.name}" in n for n in board["notes"])
    assert "subset_accuracy" in entries[("prior", "test", "themes")]
    assert "accuracy" in entries[("prior", "test", "evidence")]

    # The model's row equals a plain evaluation with its stored decisions.
    trained = json.loads((tiny_run / "metrics.json").read_text())
    assert model_mean["macro_f1"] == pytest.approx(trained["test"]["mean_macro_f1"], abs=1e-6)

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["command"] == "pytest smoke"
    assert prov["versions"]["scikit-learn"] and prov["versions"]["torch"]
    files = {f["role"]: f for f in prov["data_files"]}
    assert files["train"]["sha256"] == file_sha256(toy_corpus / "train.jsonl")
    assert files["test"]["sha256"] == inference_sha256(toy_corpus / "test.jsonl")
    assert files["external"]["path"] == str(external)
    assert prov["models"][0]["files"]["model.safetensors"] == inference_sha256(
        tiny_run / "model" / "model.safetensors"
    )

    md = (out / "leaderboard.md").read_text()
    assert "## Leaderboard: `test`" in md and "## Robustness" in md and "## Slices" in md
    assert "## Agreement with human coders" in md and "coder a vs coder b" in md.lower()
    assert " †" in md
    assert "pytest smoke" in md
    assert "`themes` micro-F1, and its paired gap to the baseline best on `themes` macro-F1" in md
    assert "`evidence` micro-F1" not in md  # single-label: micro-F1 is accuracy
    profile = json.loads((out / "profile" / "profile.json").read_text())
    assert profile["sources"] == ["annotated", "predicted"]
    assert board["profile"]["system"] == tiny_run.name


def test_suite_without_models_and_its_errors(toy_corpus, tmp_path):
    out = tmp_path / "baselines_only"
    cfg = _smoke_cfg(
        toy_corpus,
        out,
        extra=[
            "systems.baselines=[prior]",
            "plots=false",
            "bootstrap.resamples=20",
            "datasets.slices={}",
        ],
    )
    benchmark.run_benchmark(cfg, command="x")
    board = json.loads((out / "leaderboard.json").read_text())
    assert [s["name"] for s in board["systems"]] == ["prior"]
    assert any("annotations only" in n for n in board["notes"])
    # An existing report folder is never overwritten.
    with pytest.raises(FileExistsError):
        benchmark.run_benchmark(cfg, command="x")
    empty = _smoke_cfg(toy_corpus, tmp_path / "none", extra=["systems.baselines=[]"])
    with pytest.raises(ValueError, match="no systems"):
        benchmark.run_benchmark(empty, command="x")
    assert not (tmp_path / "none").exists()


def test_baselines_fitted_on_several_splits(toy_corpus, tmp_path):
    """``data.train_split`` may name several splits: the baselines are fitted on all of
    their items (a refitted model's fair comparison), never on the eval split."""
    extra = ["systems.baselines=[prior]", "plots=false", "bootstrap.resamples=20"]
    out = tmp_path / "both"
    cfg = _smoke_cfg(toy_corpus, out, extra=[*extra, "data.train_split=[train,validation]"])
    benchmark.run_benchmark(cfg, command="x")
    board = json.loads((out / "leaderboard.json").read_text())
    (prior,) = board["systems"]
    assert (prior["name"], prior["fitted_on"]) == ("prior", "train + validation")
    roles = [f["role"] for f in json.loads((out / "provenance.json").read_text())["data_files"]]
    assert roles[:2] == ["train", "validation"]
    bad = _smoke_cfg(toy_corpus, tmp_path / "leak", extra=[*extra, "data.train_split=[train,test]"])
    from scrclf.errors import SettingsError

    with pytest.raises(SettingsError, match="includes the eval split 'test'"):
        benchmark.run_benchmark(bad, command="x")
    assert not (tmp_path / "leak").exists()


def test_a_failed_benchmark_leaves_no_folder(toy_corpus, tmp_path, monkeypatch):
    from scrclf.reporting import plots

    def broken(*args, **kwargs):
        raise RuntimeError("chart failed")

    monkeypatch.setattr(plots, "headline_chart", broken)
    out = tmp_path / "failed"
    cfg = _smoke_cfg(
        toy_corpus,
        out,
        extra=["systems.baselines=[prior]", "bootstrap.resamples=20", "datasets.slices={}"],
    )
    with pytest.raises(RuntimeError, match="chart failed"):
        benchmark.run_benchmark(cfg, command="x")
    assert list(tmp_path.iterdir()) == []


def test_default_output_folder_is_timestamped_per_suite(tmp_path):
    path = benchmark.output_dir({"suite": "default", "report_root": str(tmp_path), "out_dir": None})
    assert path.parent == tmp_path and path.name.startswith("default-")
    path.mkdir()
    again = benchmark.output_dir(
        {"suite": "default", "report_root": str(tmp_path), "out_dir": None}
    )
    assert again != path


def test_benchmark_script(toy_corpus, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = run_script("scripts/benchmark.py", "suite=nonexistent", env=env, timeout=120)
    assert done.returncode == 2 and "unknown suite 'nonexistent'" in done.stderr
    assert "smoke" in done.stderr and "default" in done.stderr

    out = tmp_path / "scripted"
    done = run_script(
        "scripts/benchmark.py",
        "suite=smoke",
        f"data.dir={toy_corpus}",
        f"out_dir={out}",
        "systems.baselines=[prior,keywords]",
        "bootstrap.resamples=20",
        "plots=false",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    prov = json.loads((out / "provenance.json").read_text())
    assert "suite=smoke" in prov["command"] and "benchmark.py" in prov["command"]
    assert (
        len(read_records(toy_corpus / "test.jsonl"))
        == json.loads((out / "leaderboard.json").read_text())["datasets"][0]["n_items"]
    )


def test_suite_settings_hold_the_yaml_defaults():
    from scrclf.settings import BenchmarkSettings, era_bins

    cfg = _container(compose_train([], config_name="benchmark/default"))
    bench = BenchmarkSettings.from_config(cfg)
    shipped = cfg["datasets"]
    assert bench.variants.typos is not None
    assert bench.variants.typos.seed == shipped["variants"]["typos"]["seed"]
    assert bench.variants.typos.rate == shipped["variants"]["typos"]["rate"]
    assert bench.variants.truncate_words == shipped["variants"]["truncate"]["words"]
    assert bench.slices.addressee is not None and bench.slices.era is not None
    assert bench.slices.addressee.min_items == shipped["slices"]["addressee"]["min_items"]
    assert [b.as_dict() for b in era_bins()] == [
        {"name": b.get("name"), "min": b.get("min"), "max": b.get("max")}
        for b in shipped["slices"]["era"]["bins"]
    ]
    assert list(bench.metrics) == cfg["metrics"]
    assert (bench.bootstrap.resamples, bench.bootstrap.seed) == (
        cfg["bootstrap"]["resamples"],
        cfg["bootstrap"]["seed"],
    )
    off = _container(
        compose_train(
            ["datasets.variants.typos=null", "datasets.slices.era=null"],
            config_name="benchmark/default",
        )
    )
    bench = BenchmarkSettings.from_config(off)
    assert bench.variants.typos is None and bench.slices.era is None


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["bootstrap.resamples=0"], "benchmark.bootstrap.resamples must be at least 1"),
        (["bootstrap.confidence=2"], "benchmark.bootstrap.confidence must lie between 0 and 1"),
        (["datasets.variants.typos.rate=lots"], "benchmark.datasets.variants.typos.rate must"),
        (["~datasets.variants.typos.seed"], "benchmark.datasets.variants.typos.seed is missing"),
        (["datasets.slices.era.min_items=-1"], "benchmark.datasets.slices.era.min_items must"),
        (["datasets.slices.era.bins=[{name: x}]"], "benchmark.datasets.slices.era.bins[0] needs"),
        (["systems.backend=gpu"], "benchmark.systems.backend must be one of"),
        (["+bootstrap.method=bca"], "unknown setting benchmark.bootstrap.method"),
        (["+colour=red"], "unknown setting benchmark.colour"),
        (["metrics=[]"], "benchmark.metrics must name at least one metric"),
        (["data.train_split=[]"], "benchmark.data.train_split must name one split"),
        (["data.train_split=[train,train]"], "benchmark.data.train_split must name one split"),
    ],
)
def test_suite_settings_name_the_setting_at_fault(overrides, message):
    import re

    from scrclf.errors import SettingsError
    from scrclf.settings import BenchmarkSettings

    cfg = _container(compose_train(overrides, config_name="benchmark/default"))
    with pytest.raises(SettingsError, match=re.escape(message)):
        BenchmarkSettings.from_config(cfg)
