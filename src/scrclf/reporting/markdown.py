"""Markdown rendering of evaluation reports, benchmark leaderboards and domain profiles.

Every function takes the JSON-ready result (as written to ``metrics.json``,
``leaderboard.json`` or ``profile.json``) and returns Markdown text; nothing here computes
a metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scrclf.reporting.plots import MIN_BIN_COUNT
from scrclf.tasks import HEADLINE

SETTING_TITLES = {
    "calibrated": "stored (calibrated)",
    "default": "default (T=1, 0.5)",
    "recalibrated": "re-fitted on validation",
}


# ---------------------------------------------------------------------------- helpers


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``n/a`` for missing values."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ci(value: Any, ci: Sequence[float] | None, digits: int = 3) -> str:
    """``0.712 [0.650, 0.770]``, or the value alone when there is no interval."""
    if value is None:
        return "n/a"
    if not ci or ci[0] is None or ci[1] is None:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def fmt_signed(value: Any, ci: Sequence[float] | None = None, digits: int = 3) -> str:
    def signed(x: float) -> str:
        return f"{round(x, digits) + 0.0:+.{digits}f}"  # + 0.0 turns -0.0 into 0.0

    if value is None:
        return "n/a"
    text = signed(value)
    if ci and ci[0] is not None and ci[1] is not None:
        text += f" [{signed(ci[0])}, {signed(ci[1])}]"
    return text


def pct(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None
) -> str:
    """A GitHub-flavoured Markdown table; ``align`` holds ``l``/``r`` per column."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------- evaluation


def _task_summary_rows(result: Mapping[str, Any]) -> list[list[str]]:
    decisions = result["decisions"]
    rows = []
    for name in result["data"]["tasks"]:
        for setting, block in decisions.items():
            m = block["metrics"][name]
            ci = m.get("intervals", {})
            multi = "subset_accuracy" in m
            rows.append(
                [
                    name,
                    SETTING_TITLES.get(setting, setting),
                    fmt_ci(m["macro_f1"], ci.get("macro_f1")),
                    fmt_ci(m["micro_f1"], ci.get("micro_f1")),
                    fmt_ci(m["weighted_f1"], ci.get("weighted_f1")),
                    fmt_ci(m["subset_accuracy"], ci.get("subset_accuracy"))
                    if multi
                    else fmt_ci(m["accuracy"], ci.get("accuracy")),
                    fmt_ci(m["hamming_loss"], ci.get("hamming_loss")) if multi else "",
                    fmt(m.get("pr_auc")),
                    fmt(m.get("ece")),
                ]
            )
    return rows


def _per_label_rows(task: str, decisions: Mapping[str, Any]) -> list[list[str]]:
    stored = decisions["calibrated"]["metrics"][task]["per_label"]
    default = decisions["default"]["metrics"][task]["per_label"]
    rows = []
    for label, m in stored.items():
        rows.append(
            [
                label,
                fmt(m["precision"]),
                fmt(m["recall"]),
                fmt_ci(m["f1"], m.get("f1_interval")),
                fmt(default[label]["f1"]),
                m["support"],
            ]
        )
    return rows


def _confusion_block(task: Mapping[str, Any], m: Mapping[str, Any]) -> str:
    labels = task["labels"]
    confusion = m["confusion"]
    if isinstance(confusion, Mapping):
        rows = [
            [label, c[1][1], c[0][1], c[1][0], c[0][0]]
            for label, c in ((lab, confusion[lab]) for lab in labels)
        ]
        return md_table(["label", "TP", "FP", "FN", "TN"], rows)
    rows = [[f"**{labels[i]}**", *row] for i, row in enumerate(confusion)]
    return md_table(["true \\ predicted", *labels], rows)


def _reliability_rows(
    bins_by_setting: Mapping[str, Sequence[Mapping[str, Any]]],
) -> list[list[str]]:
    settings = list(bins_by_setting)
    first = bins_by_setting[settings[0]]
    rows = []
    for k, b in enumerate(first):
        if not any(bins_by_setting[s][k]["count"] for s in settings):
            continue  # a bin no setting uses
        row = [f"{b['lower']:.1f}-{b['upper']:.1f}"]
        for s in settings:
            bk = bins_by_setting[s][k]
            row += [
                f"{bk['count']} *" if 0 < bk["count"] < MIN_BIN_COUNT else bk["count"],
                fmt(bk["confidence"]) if bk["count"] else "",
                fmt(bk["accuracy"]) if bk["count"] else "",
            ]
        rows.append(row)
    return rows


def render_evaluation(
    result: Mapping[str, Any], images: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    """The ``report.md`` of an evaluation (see :func:`scrclf.evaluation.evaluate.evaluate`)."""
    images = images or {}
    model, data, boot = result["model"], result["data"], result["bootstrap"]
    decisions = result["decisions"]
    conf = int(round(100 * boot["confidence"]))
    out = [f"# Evaluation of `{model['name']}` on `{data['name']}`", ""]
    out += [
        f"- Model: `{model['path']}` ({model['kind']}, {model['backend']} backend)",
        f"- Data: `{data['file'] or 'records given in memory'}`"
        + (f" (sha256 `{data['sha256'][:16]}…`)" if data.get("sha256") else ""),
        f"- Items: {data['n_items']} in {data['n_reviews']} reviews"
        + (
            f" (+{data['items_without_review']} without a review id)"
            if data.get("items_without_review")
            else ""
        ),
        f"- Tasks scored: {', '.join(data['tasks'])}",
        f"- Intervals: {conf}% {boot['method']}, {boot['resamples']} resamples, "
        f"seed {boot['seed']}",
        f"- Written {result['created']} by scrclf {result['scrclf_version']}",
        "",
    ]
    if data["notes"]:
        out += ["**Notes**", ""] + [f"- {n}" for n in data["notes"]] + [""]

    out += ["## Headline", ""]
    rows = []
    for setting, block in decisions.items():
        m = block["metrics"]
        rows.append(
            [
                SETTING_TITLES.get(setting, setting),
                fmt_ci(m[HEADLINE], m.get(f"{HEADLINE}_interval")),
                block["description"],
            ]
        )
    out += [md_table(["decisions", "mean macro-F1 over tasks", "what"], rows, ["l", "r", "l"]), ""]
    out += [
        "## Scores per task",
        "",
        "Subset accuracy and Hamming loss for multi-label tasks, accuracy for single-label "
        "tasks. PR-AUC is the mean average precision over labels with positives; ECE is "
        "the expected calibration error (10 bins).",
        "",
    ]
    out += [
        md_table(
            [
                "task",
                "decisions",
                "macro-F1",
                "micro-F1",
                "weighted-F1",
                "accuracy / subset acc.",
                "Hamming loss",
                "PR-AUC",
                "ECE",
            ],
            _task_summary_rows(result),
            ["l", "l"] + ["r"] * 7,
        ),
        "",
    ]

    tasks = {t["name"]: t for t in decisions["calibrated"]["tasks"]}
    for name in data["tasks"]:
        task = tasks[name]
        stored = decisions["calibrated"]["metrics"][name]
        out += [f"## {name} ({task['type'].replace('_', '-')})", ""]
        out += [
            "### Per label",
            "",
            md_table(
                ["label", "precision", "recall", f"F1 [{conf}% CI]", "F1 at default", "support"],
                _per_label_rows(name, decisions),
            ),
            "",
        ]
        out += ["### Confusion (stored decisions)", "", _confusion_block(task, stored), ""]
        bins = {
            SETTING_TITLES.get(s, s): decisions[s]["metrics"][name]["reliability"]
            for s in decisions
        }
        headers = ["bin"]
        for s in bins:
            headers += [f"n ({s})", "confidence", "accuracy"]
        out += [
            "### Reliability",
            "",
            "Multi-label: every (item, label) probability against whether the label is "
            "true. Single-label: the top probability against whether the top label is "
            f"right. * marks a bin of fewer than {MIN_BIN_COUNT} predictions: its accuracy "
            "is noise.",
            "",
            md_table(headers, _reliability_rows(bins)),
            "",
        ]
        for key, title in (
            ("confusion", "confusion"),
            ("reliability", "reliability"),
            ("per_label_f1", "F1 per label"),
        ):
            if name in images and key in images[name]:
                out.append(f"![{name} {title}]({images[name][key]})")
        out.append("")

    out += ["## Decision settings", ""]
    for setting, block in decisions.items():
        rows = []
        for t in block["tasks"]:
            thresholds = ", ".join(f"{k} {v:.3f}" for k, v in (t["thresholds"] or {}).items())
            offsets = ", ".join(f"{k} {v:+.2f}" for k, v in (t.get("offsets") or {}).items())
            rule = thresholds or (f"top class after offsets: {offsets}" if offsets else "argmax")
            rows.append([t["name"], fmt(t["temperature"]), rule])
        out += [
            f"**{SETTING_TITLES.get(setting, setting)}**",
            "",
            md_table(["task", "temperature", "thresholds / offsets"], rows, ["l", "r", "l"]),
            "",
        ]

    recal = result.get("recalibration")
    if recal:
        out += render_recalibration(recal)
    files = result.get("items")
    if files:
        out += [
            "## Per-item predictions",
            "",
            f"Every item with its id, review, text, and per task the gold and predicted "
            f"labels, the score of every label and whether it is right: "
            f"[{files['csv']}]({files['csv']}), [{files['jsonl']}]({files['jsonl']}). "
            f"The errors the model was surest of, per task: [{files['errors']}]"
            f"({files['errors']}).",
            "",
        ]
    if result.get("profile"):
        out += ["## Profile", "", f"See [{result['profile']}]({result['profile']}).", ""]
    return "\n".join(out).rstrip() + "\n"


def render_recalibration(recal: Mapping[str, Any]) -> list[str]:
    v = recal["validation"]
    out = [
        "## Recalibration on validation",
        "",
        f"Temperatures and thresholds re-fitted on `{v['file'] or v['name']}` "
        f"({v['n_items']} items, {v['n_reviews']} reviews). The model is unchanged; the "
        "scores above under *re-fitted on validation* show what the new settings would "
        "give.",
        "",
    ]
    rows = []
    for task, change in recal["changes"].items():
        if not change["refit"]:
            rows.append([task, "(no labels in the validation file: unchanged)", ""])
            continue
        t = change["temperature"]
        rows.append([task, "temperature", f"{fmt(t['stored'])} → {fmt(t['refit'])}"])
        for label, off in (change.get("offsets") or {}).items():
            if abs(off["stored"] - off["refit"]) > 1e-9:
                rows.append(
                    [task, f"offset {label}", f"{off['stored']:+.2f} → {off['refit']:+.2f}"]
                )
        for label, th in (change.get("thresholds") or {}).items():
            if abs(th["stored"] - th["refit"]) > 1e-9:
                rows.append(
                    [
                        task,
                        f"threshold {label}",
                        f"{fmt(th['stored'])} → {fmt(th['refit'])} ({th['how']})",
                    ]
                )
    out += [md_table(["task", "setting", "stored → re-fitted"], rows, ["l", "l", "l"]), ""]
    rows = [
        [task, *(fmt_signed(d.get(k)) for k in ("macro_f1", "micro_f1", "ece"))]
        for task, d in recal["delta"].items()
        if isinstance(d, Mapping)
    ]
    rows.append([HEADLINE, fmt_signed(recal["delta"].get(HEADLINE)), "", ""])
    out += [
        "Change in scores on the evaluated data (re-fitted − stored):",
        "",
        md_table(["task", "macro-F1", "micro-F1", "ECE"], rows),
        "",
    ]
    return out


# ------------------------------------------------------------------------- leaderboard


def _entry_index(entries: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping]:
    return {(e["system"], e["dataset"], e["task"]): e for e in entries}


def render_leaderboard(board: Mapping[str, Any]) -> str:
    """``leaderboard.md`` of a benchmark run (see :mod:`scrclf.evaluation.suites`)."""
    entries = board["entries"]
    index = _entry_index(entries)
    systems = [s["name"] for s in board["systems"]]
    kinds = {s["name"]: s["kind"] for s in board["systems"]}
    datasets = board["datasets"]
    conf = int(round(100 * board["bootstrap"]["confidence"]))
    out = [
        f"# Benchmark `{board['suite']}`",
        "",
        f"Written {board['created']}. Headline: macro-F1 per task and its mean over tasks "
        f"({HEADLINE}), with {conf}% cluster-bootstrap intervals over reviews "
        f"({board['bootstrap']['resamples']} resamples, seed {board['bootstrap']['seed']}). "
        "The gap is the difference to the best baseline on the same data, with a paired "
        "interval (same resamples for both systems).",
        "",
    ]

    main = board["main_dataset"]
    for ds in datasets:
        if ds["kind"] not in ("test", "external"):
            continue
        tasks = ds["tasks"]
        rows = []
        for system in sorted(
            systems, key=lambda s: -(index.get((s, ds["name"], "mean"), {}).get("macro_f1") or -1)
        ):
            mean = index.get((system, ds["name"], "mean"))
            if mean is None:
                continue
            gap = mean.get("gap_to_best_baseline") or {}
            row = [
                f"**{system}**" if kinds[system] == "model" else system,
                kinds[system],
                fmt_ci(mean["macro_f1"], mean.get("macro_f1_interval")),
            ]
            row.append(
                fmt_signed(gap.get("value"), gap.get("interval"))
                if gap.get("baseline") and gap.get("baseline") != system
                else "—"
            )
            for task in tasks:
                e = index.get((system, ds["name"], task))
                row.append(fmt_ci(e["macro_f1"], e.get("macro_f1_interval")) if e else "n/a")
            rows.append(row)
        title = "Leaderboard" if ds["name"] == main else "External data"
        out += [
            f"## {title}: `{ds['name']}` ({ds['n_items']} items, {ds['n_reviews']} reviews)",
            "",
        ]
        out += [
            md_table(
                [
                    "system",
                    "kind",
                    f"{HEADLINE} [{conf}% CI]",
                    "gap to best baseline",
                    *[f"{t} macro-F1" for t in tasks],
                ],
                rows,
                ["l", "l"] + ["r"] * (2 + len(tasks)),
            ),
            "",
        ]
        out += _micro_gap_tables(index, systems, kinds, ds, conf)
        if ds["name"] == main and board.get("headline_chart"):
            out += [f"![{HEADLINE} by system]({board['headline_chart']})", ""]
        if ds.get("notes"):
            out += [f"- {n}" for n in ds["notes"]] + [""]
        out += _detail_table(index, systems, ds)

    variants = [d for d in datasets if d["kind"] == "variant"]
    if variants:
        out += [
            "## Robustness",
            "",
            f"Change in {HEADLINE} against the clean `{main}` data (paired: the same "
            "reviews in every resample).",
            "",
        ]
        rows = []
        for system in systems:
            row = [system]
            for d in variants:
                e = index.get((system, d["name"], "mean"))
                change = (e or {}).get("change_vs_clean") or {}
                cell = (
                    f"{fmt(e['macro_f1'])} ({fmt_signed(change.get('value'), change.get('interval'))})"
                    if e
                    else "n/a"
                )
                row.append(cell + (" †" if e and e.get("unchanged") else ""))
            rows.append(row)
        out += [md_table(["system", *[f"`{d['name']}`" for d in variants]], rows), ""]
        out += [f"- `{d['name']}`: {d['description']}" for d in variants]
        if any(e.get("unchanged") for e in entries):
            out.append(
                "- †: the variant cannot change this system (identical outputs on every "
                "item, e.g. an uncased model given lower-cased text); see the notes"
            )
        out += [""]

    slices = [d for d in datasets if d["kind"] == "slice"]
    if slices:
        out += [
            "## Slices",
            "",
            f"{HEADLINE} [{conf}% CI] on subsets of `{main}`. Labels "
            "absent from a slice count as F1 0 in its macro average, so compare systems "
            "within a column rather than across columns.",
            "",
        ]
        rows = []
        for d in slices:
            row = [f"`{d['name']}`", d["n_items"], d["n_reviews"]]
            for system in systems:
                e = index.get((system, d["name"], "mean"))
                row.append(fmt_ci(e["macro_f1"], e.get("macro_f1_interval")) if e else "n/a")
            rows.append(row)
        out += [md_table(["slice", "items", "reviews", *systems], rows), ""]

    out += ["## Systems", ""]
    out += [
        md_table(
            ["system", "kind", "what"],
            [[s["name"], s["kind"], s.get("description", "")] for s in board["systems"]],
            ["l", "l", "l"],
        ),
        "",
    ]
    out += ["## Datasets", ""]
    out += [
        md_table(
            ["dataset", "kind", "items", "reviews", "tasks", "what"],
            [
                [
                    f"`{d['name']}`",
                    d["kind"],
                    d["n_items"],
                    d["n_reviews"],
                    ", ".join(d["tasks"]),
                    d.get("description", ""),
                ]
                for d in datasets
            ],
            ["l", "l", "r", "r", "l", "l"],
        ),
        "",
    ]
    agreement = board.get("agreement")
    if agreement:
        out += render_agreement(agreement)
    reports = board.get("file_reports") or []
    if reports:
        out += [
            "## Full reports per file",
            "",
            "For every trained model on every evaluated file: per-label tables, confusion "
            "matrices, calibration, the profile, per-item predictions (CSV, JSONL) and the "
            "worst errors per task.",
            "",
            md_table(
                ["dataset", "system", "report", "per-item predictions", "worst errors"],
                [
                    [
                        f"`{r['dataset']}`",
                        r["system"],
                        f"[report.md]({r['path']}/report.md)",
                        f"[predictions.csv]({r['path']}/predictions.csv)",
                        f"[errors.md]({r['path']}/errors.md)",
                    ]
                    for r in reports
                ],
                ["l", "l", "l", "l", "l"],
            ),
            "",
        ]
    notes = board.get("notes") or []
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    prov = board.get("provenance")
    if prov:
        out += ["## Provenance", "", f"Command: `{prov['command']}`", ""]
        out += [
            md_table(
                ["data file", "sha256"],
                [[f"`{f['path']}`", f"`{f['sha256']}`"] for f in prov["data_files"]],
                ["l", "l"],
            ),
            "",
        ]
        out += [
            md_table(
                ["package", "version"],
                [[k, v or "not installed"] for k, v in prov["versions"].items()],
                ["l", "l"],
            ),
            "",
        ]
    if board.get("profile"):
        out += [
            "## Profile",
            "",
            f"The domain profile of `{main}` with the predictions of "
            f"`{board['profile']['system']}`: [{board['profile']['path']}]"
            f"({board['profile']['path']}).",
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def _micro_gap_tables(
    index, systems: Sequence[str], kinds: Mapping[str, str], ds: Mapping[str, Any], conf: Any
) -> list[str]:
    """Per multi-label task: each system's micro-F1 and its paired gap to the baseline that
    is best on that task's macro-F1 (micro-F1 counts every label decision alike, so the
    frequent themes weigh most)."""
    out: list[str] = []
    for task in ds["tasks"]:
        entries = {s: index.get((s, ds["name"], task)) for s in systems}
        entries = {s: e for s, e in entries.items() if e is not None}
        if not any(e.get("subset_accuracy") is not None for e in entries.values()):
            continue
        rows = []
        for system, e in sorted(entries.items(), key=lambda kv: -(kv[1].get("micro_f1") or -1)):
            to_baseline = e.get("gap_to_best_baseline") or {}
            gap = to_baseline.get("micro_f1") or {}
            baseline = to_baseline.get("baseline")
            rows.append(
                [
                    f"**{system}**" if kinds[system] == "model" else system,
                    fmt_ci(e.get("micro_f1"), e.get("micro_f1_interval")),
                    fmt_signed(gap.get("value"), gap.get("interval"))
                    if gap and baseline != system
                    else "—",
                ]
            )
        out += [
            f"`{task}` micro-F1, and its paired gap to the baseline best on `{task}` macro-F1:",
            "",
            md_table(
                ["system", f"{task} micro-F1 [{conf}% CI]", "gap to that baseline"],
                rows,
                ["l", "r", "r"],
            ),
            "",
        ]
    return out


def _detail_table(index, systems: Sequence[str], ds: Mapping[str, Any]) -> list[str]:
    rows = []
    for task in ds["tasks"]:
        for system in systems:
            e = index.get((system, ds["name"], task))
            if e is None:
                continue
            multi = e.get("subset_accuracy") is not None
            rows.append(
                [
                    task,
                    system,
                    fmt(e.get("micro_f1")),
                    fmt(e.get("weighted_f1")),
                    fmt(e.get("subset_accuracy") if multi else e.get("accuracy")),
                    fmt(e.get("hamming_loss")) if multi else "",
                    fmt(e.get("pr_auc")),
                    fmt(e.get("ece")),
                ]
            )
    if not rows:
        return []
    return [
        "<details><summary>More metrics</summary>",
        "",
        md_table(
            [
                "task",
                "system",
                "micro-F1",
                "weighted-F1",
                "accuracy / subset acc.",
                "Hamming loss",
                "PR-AUC",
                "ECE",
            ],
            rows,
            ["l", "l"] + ["r"] * 6,
        ),
        "",
        "</details>",
        "",
    ]


# ---------------------------------------------------------------------------- profile


# Column titles of the agreement statistics (scrclf.evaluation.human_agreement).
STAT_TITLES = {
    "primary_kappa": "primary kappa",
    "mean_label_kappa": "mean label kappa",
    "micro_f1": "micro-F1",
}


def render_agreement(agreement: Mapping[str, Any]) -> list[str]:
    """The model-vs-human agreement section of the leaderboard."""
    out = ["## Agreement with human coders", ""]
    systems = agreement.get("systems") or {}
    if not systems:
        return out + [f"- {n}" for n in agreement.get("notes", [])] + [""]
    first = next(iter(systems.values()))
    boot = first["bootstrap"]
    conf = int(round(100 * boot["confidence"]))
    out += [
        f"Each model's decisions as a third coder on the {first['n_items']} double-coded "
        f"items of the eval split ({first['n_reviews']} reviews; `{agreement['file']}`), "
        "beside the two human coders on the same items. Cohen's kappa; multi-label tasks: "
        "kappa on the primary label, the mean per-label kappa and the micro-F1 of the label "
        "sets (the coders' micro-F1 with each other is a ceiling for the model's). "
        f"{conf}% intervals from a cluster bootstrap over reviews "
        f"({boot['resamples']} resamples, shared by all pairs).",
        "",
    ]
    for name, result in systems.items():
        pairs = result["pairs"]
        head = ["coders"]
        keys = []
        for task, stats in pairs[0]["tasks"].items():
            for stat in stats:
                head.append(f"{task} {STAT_TITLES.get(stat, stat)}")
                keys.append((task, stat))
        rows = []
        for pair in pairs:
            a, b = pair["coders"]
            title = f"{'model' if a == 'model' else a} vs {b}".replace("coder_", "coder ")
            row = [title.replace("model", f"**{name}**", 1) if a == "model" else title]
            for task, stat in keys:
                v = pair["tasks"][task][stat]
                row.append(fmt_ci(v["value"], v["interval"]))
            rows.append(row)
        out += [f"**{name}**", "", md_table(head, rows, ["l"] + ["r"] * len(keys)), ""]
        out += [f"- {n}" for n in result.get("notes", [])]
    out += [f"- {n}" for n in agreement.get("notes", [])] + [""]
    return out


def render_profile(result: Mapping[str, Any], chart: str | None = None) -> str:
    """``profile.md``: recommendations per review and label shares, annotated vs predicted."""
    per = result["per_review"]
    ref = result["reference_2011"]
    out = [
        "# Profile of the recommendations",
        "",
        f"{result['n_items']} recommendations from {per['n_reviews']} reviews"
        + (
            f" ({per['items_without_review']} without a review id)"
            if per.get("items_without_review")
            else ""
        )
        + ".",
        "",
    ]
    out += ["## Recommendations per review", ""]
    out += [
        md_table(
            ["mean", "median", "min", "max"],
            [[fmt(per["mean"], 1), fmt(per["median"], 1), fmt(per["min"]), fmt(per["max"])]],
            ["r"] * 4,
        ),
        "",
    ]
    out += [
        md_table(
            ["recommendations in a review", "reviews"],
            [[h["bin"], h["reviews"]] for h in per["histogram"]],
        ),
        "",
    ]
    out += [
        f"For comparison, {ref['source']} counted {ref['recommendations']} recommendations "
        f"in {ref['reviews']} reviews: {ref['mean_per_review']:.1f} per review on average, "
        f"{ref['max_per_review']} in one.",
        "",
    ]
    for name, entry in result["tasks"].items():
        sources = [s for s in ("annotated", "predicted") if s in entry]
        if entry["type"] == "multi_label":
            out += [
                f"## {name}",
                "",
                "Share of items with each theme as the primary (first) theme and in any "
                "position (items can have up to three themes, so the second column sums "
                "to more than 100%).",
                "",
            ]
            headers = ["label"]
            for s in sources:
                headers += [f"primary ({s})", f"any position ({s})"]
            rows = []
            for label in entry["labels"]:
                row = [label]
                for s in sources:
                    row += [pct(entry[s]["primary"][label]), pct(entry[s]["any"][label])]
                rows.append(row)
            rows.append(["items", *[x for s in sources for x in (entry[s]["n"], "")]])
            out += [md_table(headers, rows), ""]
            per_item = [f"{s}: {fmt(entry[s]['labels_per_item'], 2)}" for s in sources]
            out += [f"Themes per item: {'; '.join(per_item)}.", ""]
        else:
            out += [f"## {name}", ""]
            rows = [
                [label, *[pct(entry[s]["share"][label]) for s in sources]]
                for label in entry["labels"]
            ]
            rows.append(["items", *[entry[s]["n"] for s in sources]])
            out += [md_table(["label", *[f"share ({s})" for s in sources]], rows), ""]
        for s in sources:
            if entry[s].get("unknown_labels"):
                out += [
                    f"- {s} values outside the label set: {', '.join(entry[s]['unknown_labels'])}",
                    "",
                ]
    if chart:
        out += [f"![profile]({chart})", ""]
    return "\n".join(out).rstrip() + "\n"
