"""From a folder of review reports to the 2011 study's tables, for one review or hundreds.

:func:`run_review` reads each report, finds its recommendations, classifies them with an
exported model and writes the tables the study of serious case reviews (Brandon et al.
2011, DFE-RR157) built by hand: recommendations per review and by agency (its Table 1),
the reviews and items touching each theme (its Table 2), action strength beside the
patient-safety figures of Hibbert et al. (2018), and the evidence recommendations rest on.
Shares carry 95% intervals from a bootstrap over whole reviews once there are five. A
corrections CSV in the corpus's columns lets a person fix labels and feed them back to
``scrclf data validate``, evaluation and training.

A file that cannot be read is named and skipped; the run goes on. The outputs are built
in a hidden folder inside the destination and moved into place only when all are written,
so a failed run leaves earlier results as they were, and files there that this command
does not write are never touched.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scrclf.errors import DataError, OutputError

from . import classify
from .finder import find_recommendations
from .readers import SUFFIXES, DocumentError, read_document

OUTPUT_FILES = (
    "items.csv",
    "items.jsonl",
    "profile.json",
    "report.md",
    "report.html",
    "corrections.csv",
)
THEMES = [
    "procedures_policy",
    "training_learning",
    "supervision_support",
    "assessment_risk",
    "information_sharing",
    "records_systems",
    "audit_assurance",
    "workforce_resources",
    "child_family_engagement",
    "national_structural",
    "other",
]
STRENGTHS = ["weak", "intermediate", "strong"]
EVIDENCE = ["research", "guidance", "local_data", "single_case", "none_stated"]
GROUNDED = ("research", "guidance", "local_data")
PER_REVIEW_BINS = ((1, 5), (6, 10), (11, 20), (21, 30), (31, 50), (51, 100), (101, None))
# An item whose chosen label has a calibrated probability below this is flagged for a person.
LOW_CONFIDENCE = 0.6
HIBBERT_2018 = {
    "source": "Hibbert et al. (2018), root cause analyses in health care",
    "recommendations": 1137,
    "weak": 0.48,
    "intermediate": 0.44,
    "strong": 0.08,
    "analyses_without_strong": 0.72,
}
BRANDON_2011 = {
    "source": "Brandon, Sidebotham, Bailey and Belderson (2011), DFE-RR157",
    "reviews": 20,
    "recommendations": 931,
    "mean_per_review": 46.55,
}


def collect_files(paths: Sequence[str | Path]) -> list[Path]:
    """Supported documents under the given files and folders, in a stable order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            raise DataError("no such file or folder", path)
    seen: set[Path] = set()
    unique: list[Path] = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _review_ids(files: Sequence[Path]) -> list[str]:
    counts = Counter(f.stem for f in files)
    ids: list[str] = []
    used: Counter[str] = Counter()
    for f in files:
        used[f.stem] += 1
        ids.append(f.stem if counts[f.stem] == 1 else f"{f.stem}-{used[f.stem]}")
    return ids


def _progress(items, enabled: bool, total: int, desc: str):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, total=total, desc=desc, unit="doc", file=sys.stderr, leave=False)


def run_review(
    paths: Sequence[str | Path],
    model,
    out_dir: str | Path,
    *,
    backend: str = "auto",
    quantized: bool = False,
    batch_size: int = 32,
    explain: bool = True,
    progress: bool = True,
    low_confidence: float = LOW_CONFIDENCE,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Read, find, classify and report; returns the profile written to ``profile.json``.

    ``model`` is a model folder or an already loaded classifier. Unreadable documents are
    reported through ``warn`` (stderr by default) and listed in the outputs.
    """
    warn = warn or (lambda msg: print(f"scrclf: warning: {msg}", file=sys.stderr))
    files = collect_files(paths)
    if not files:
        raise DataError(
            f"no review documents ({', '.join(sorted(set(SUFFIXES)))}) under "
            f"{', '.join(str(p) for p in paths)}"
        )
    clf = (
        classify.load_model(str(model), backend, quantized)
        if isinstance(model, (str, Path))
        else model
    )
    reviews: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    show = progress and len(files) > 1
    for path, review_id in _progress(
        zip(files, _review_ids(files), strict=True), show, len(files), "reading reviews"
    ):
        entry = {
            "review_id": review_id,
            "file": str(path),
            "format": None,
            "pages": None,
            "status": "ok",
            "message": None,
            "recommendations": 0,
        }
        try:
            doc = read_document(path)
        except DocumentError as err:
            entry.update(status="skipped", message=err.problem)
            warn(f"{path}: skipped: {err.problem}")
            reviews.append(entry)
            continue
        entry.update(format=doc.format, pages=doc.pages)
        found = find_recommendations(doc.blocks)
        if not found:
            entry.update(
                status="no_recommendations", message="no recommendations section or items found"
            )
            warn(f"{path}: no recommendations found")
        entry["recommendations"] = len(found)
        reviews.append(entry)
        for k, rec in enumerate(found, start=1):
            items.append(
                {
                    "id": f"{review_id}-{k:03d}",
                    "review_id": review_id,
                    "source": path.name,
                    **rec.to_dict(),
                }
            )
    if items:
        preds = classify.predict(
            clf, [i["text"] for i in items], [i["finding"] for i in items], batch_size
        )
        drivers = (
            classify.explain(clf, [i["text"] for i in items], [i["finding"] for i in items], preds)
            if explain
            else [{} for _ in items]
        )
        for item, pred, drive in zip(items, preds, drivers, strict=True):
            _attach(item, pred, drive, low_confidence)
    profile = build_profile(reviews, items)
    profile["model"] = {
        "path": os.path.basename(os.path.normpath(str(getattr(clf, "path", model)))),
        "backend": getattr(clf, "backend", None),
        "quantized": bool(getattr(clf, "quantized", False)),
    }
    from .render import render_html, render_markdown

    outputs = {
        "items.jsonl": "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items),
        "items.csv": _items_csv(items),
        "corrections.csv": _corrections_csv(items),
        "profile.json": json.dumps(profile, indent=2, ensure_ascii=False) + "\n",
        "report.md": render_markdown(profile, items),
        "report.html": render_html(profile, items),
    }
    write_outputs(out_dir, outputs)
    return profile


def _attach(
    item: dict[str, Any], pred: dict[str, Any], drive: dict[str, Any], threshold: float
) -> None:
    themes = pred.get("themes", {})
    item["themes"] = themes.get("labels", [])
    item["theme_primary"] = themes.get("primary")
    item["evidence"] = pred.get("evidence", {}).get("label")
    item["action_strength"] = pred.get("action_strength", {}).get("label")
    confidences = []
    for task, p in pred.items():
        chosen = p.get("primary") if "labels" in p else p.get("label")
        if chosen is not None:
            confidences.append(p["scores"][chosen])
        item[f"scores_{task}"] = {k: round(v, 4) for k, v in p["scores"].items()}
    item["confidence"] = round(min(confidences), 4) if confidences else None
    item["check"] = bool(item["confidence"] is not None and item["confidence"] < threshold)
    item["drivers"] = drive


# ------------------------------------------------------------------------------ profile


def _share(num: float, den: int) -> float | None:
    return num / den if den else None


def build_profile(reviews: list[dict[str, Any]], items: list[dict[str, Any]]) -> dict[str, Any]:
    read = [r for r in reviews if r["status"] != "skipped"]
    counts = {r["review_id"]: r["recommendations"] for r in read}
    with_items = [rid for rid, n in counts.items() if n]
    per = [counts[rid] for rid in with_items]
    groups = [i["review_id"] for i in items]
    n_rev = len(with_items)
    bins = []
    for lo, hi in PER_REVIEW_BINS:
        name = f"{lo}-{hi}" if hi else f"{lo}+"
        bins.append(
            {"bin": name, "reviews": sum(1 for n in per if n >= lo and (hi is None or n <= hi))}
        )
    addressees = Counter(i["addressee"] or "not stated" for i in items)
    table1 = {
        "reviews": n_rev,
        "recommendations": len(items),
        "mean": statistics.mean(per) if per else None,
        "median": statistics.median(per) if per else None,
        "max": max(per) if per else None,
        "min": min(per) if per else None,
        "distribution": bins,
        "by_addressee": [
            {
                "addressee": a,
                "recommendations": n,
                "share": _share(n, len(items)),
                "reviews": len(
                    {i["review_id"] for i in items if (i["addressee"] or "not stated") == a}
                ),
            }
            for a, n in addressees.most_common()
        ],
    }
    classified = [i for i in items if "themes" in i]
    table2 = []
    for theme in THEMES:
        any_flags = [1.0 if theme in i["themes"] else 0.0 for i in classified]
        primary = [1.0 if i["theme_primary"] == theme else 0.0 for i in classified]
        rev_flags = [
            1.0 if any(theme in i["themes"] for i in classified if i["review_id"] == rid) else 0.0
            for rid in with_items
        ]
        table2.append(
            {
                "theme": theme,
                "reviews_with_any": int(sum(rev_flags)),
                "share_of_reviews": _share(sum(rev_flags), n_rev),
                "share_of_reviews_ci": classify.bootstrap_review_share(rev_flags),
                "share_primary": _share(sum(primary), len(classified)),
                "share_primary_ci": classify.bootstrap_share(primary, groups),
                "share_any_position": _share(sum(any_flags), len(classified)),
                "share_any_position_ci": classify.bootstrap_share(any_flags, groups),
            }
        )
    overall: list[dict[str, Any]] = []
    per_review: list[dict[str, Any]] = []
    strength: dict[str, Any] = {"overall": overall, "per_review": per_review}
    for label in STRENGTHS:
        flags = [1.0 if i["action_strength"] == label else 0.0 for i in classified]
        overall.append(
            {
                "label": label,
                "items": int(sum(flags)),
                "share": _share(sum(flags), len(classified)),
                "ci": classify.bootstrap_share(flags, groups),
            }
        )
    no_strong = []
    for rid in with_items:
        labels = Counter(i["action_strength"] for i in classified if i["review_id"] == rid)
        per_review.append({"review_id": rid, **{s: labels.get(s, 0) for s in STRENGTHS}})
        no_strong.append(0.0 if labels.get("strong") else 1.0)
    strength["reviews_without_strong"] = _share(sum(no_strong), len(no_strong))
    strength["reviews_without_strong_ci"] = classify.bootstrap_review_share(no_strong)
    strength["reference"] = HIBBERT_2018
    evidence_labels: list[dict[str, Any]] = []
    evidence: dict[str, Any] = {"labels": evidence_labels}
    for label in EVIDENCE:
        flags = [1.0 if i["evidence"] == label else 0.0 for i in classified]
        evidence_labels.append(
            {
                "label": label,
                "items": int(sum(flags)),
                "share": _share(sum(flags), len(classified)),
                "ci": classify.bootstrap_share(flags, groups),
            }
        )
    grounded = [1.0 if i["evidence"] in GROUNDED else 0.0 for i in classified]
    grounded_share = _share(sum(grounded), len(classified))
    evidence["research_guidance_or_local_data"] = grounded_share
    evidence["research_guidance_or_local_data_ci"] = classify.bootstrap_share(grounded, groups)
    evidence["single_case_or_none_stated"] = (
        1 - grounded_share if grounded_share is not None else None
    )
    return {
        "reviews": reviews,
        "documents": len(reviews),
        "skipped": [r for r in reviews if r["status"] == "skipped"],
        "without_recommendations": [
            r["review_id"] for r in reviews if r["status"] == "no_recommendations"
        ],
        "table1": table1,
        "table2": table2,
        "action_strength": strength,
        "evidence": evidence,
        "flagged_for_check": sum(1 for i in classified if i["check"]),
        "low_confidence_threshold": LOW_CONFIDENCE,
        "intervals": "95% percentile bootstrap over whole reviews (1,000 resamples); "
        "given where there are at least 5 reviews",
        "reference_2011": BRANDON_2011,
    }


# ------------------------------------------------------------------------------ outputs

ITEM_COLUMNS = [
    "id",
    "review_id",
    "source",
    "number",
    "page",
    "section",
    "addressee",
    "timescale",
    "text",
    "finding_number",
    "finding",
    "themes",
    "theme_primary",
    "evidence",
    "action_strength",
    "confidence",
    "check",
]


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if value is None:
        return ""
    return value


def _items_csv(items: list[dict[str, Any]]) -> str:
    score_cols = []
    if items and "scores_themes" in items[0]:
        score_cols = [
            f"{key}_{label}"
            for key in [k for k in items[0] if k.startswith("scores_")]
            for label in items[0][key]
        ]
    rows = [ITEM_COLUMNS + score_cols]
    for i in items:
        row = [_cell(i.get(c)) for c in ITEM_COLUMNS]
        for col in score_cols:
            key = next(k for k in i if k.startswith("scores_") and col.startswith(k + "_"))
            row.append(i[key][col[len(key) + 1 :]])
        rows.append(row)
    return _csv(rows)


CORRECTION_COLUMNS = [
    "id",
    "review_id",
    "text",
    "finding",
    "themes",
    "evidence",
    "action_strength",
    "addressee",
    "source",
    "page",
    "number",
    "confidence",
    "check",
]


def _corrections_csv(items: list[dict[str, Any]]) -> str:
    """Predicted labels in the corpus's columns, for a person to correct and feed back."""
    rows = [CORRECTION_COLUMNS]
    for i in items:
        if "themes" not in i:
            continue
        rows.append([_cell(i.get(c)) for c in CORRECTION_COLUMNS])
    return _csv(rows)


def write_outputs(out_dir: str | Path, outputs: dict[str, str]) -> None:
    """All files or none: built in a hidden folder inside ``out_dir``, then moved in."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(20, f"{out}: the output path is a file, not a folder", str(out))
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".review-", suffix=".tmp", dir=out))
    try:
        for name, text in outputs.items():
            with open(tmp / name, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        mask = os.umask(0)
        os.umask(mask)
        for name in outputs:
            os.chmod(tmp / name, 0o666 & ~mask)
            os.replace(tmp / name, out / name)
    except OSError as err:
        raise OutputError(
            err.errno or 0,
            f"cannot write the review outputs into {out}: "
            f"{err.strerror or err}; earlier results there are unchanged",
            str(out),
        ) from err
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
