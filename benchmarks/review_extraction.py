"""How well ``scrclf review`` finds recommendations, measured against gold fixture files.

The fixtures under ``tests/fixtures/reviews/`` are fictional reports with gold JSON; the
third marked ``held_out`` was not read while the extraction was written, so the figures on
it are the honest ones. Per format it reports recommendation precision and recall (an
extracted item matches a gold one when their normalised texts are at least 0.9 similar),
exact start and end boundaries, finding pairing accuracy, addressee and page agreement; and
the time to take a 100-page PDF from file to classified items (model loading excluded).

    python benchmarks/review_extraction.py                     # held-out third
    python benchmarks/review_extraction.py --split dev         # development documents,
                                                               # text variants included
    python benchmarks/review_extraction.py --model models/NAME # time classification too
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "reviews"
BOUNDARY_WORDS = 5
TARGETS = {"precision": 0.95, "recall": 0.95, "exact_boundaries": 0.90, "finding_pairing": 0.85}


def _norm_number(n):
    if n is None:
        return None
    return str(n).upper().lstrip("R").strip(".:() ") or None


def score_document(gold: dict, found: list[dict]) -> dict:
    from scrclf.reviews.finder import normalise_for_match, similarity

    golds = gold["recommendations"]
    used: set[int] = set()
    rows = []
    for g in golds:
        best, best_j = 0.0, None
        for j, f in enumerate(found):
            if j in used:
                continue
            s = similarity(g["text"], f["text"])
            if s > best:
                best, best_j = s, j
        if best_j is None or best < 0.9:
            rows.append({"gold": g["text"][:80], "matched": False, "similarity": round(best, 3)})
            continue
        used.add(best_j)
        f = found[best_j]
        gw, fw = normalise_for_match(g["text"]).split(), normalise_for_match(f["text"]).split()
        start = gw[:BOUNDARY_WORDS] == fw[:BOUNDARY_WORDS]
        end = gw[-BOUNDARY_WORDS:] == fw[-BOUNDARY_WORDS:]
        if g["finding"] is None:
            pairing = f["finding"] is None
        else:
            pairing = f["finding"] is not None and similarity(g["finding"], f["finding"]) >= 0.9
        rows.append(
            {
                "gold": g["text"][:80],
                "matched": True,
                "start": start,
                "end": end,
                "pairing": pairing,
                "number": _norm_number(g["number"]) == _norm_number(f["number"]),
                "addressee": g["addressee"] == f["addressee"],
                "page": g["page"] is None or g["page"] == f["page"],
                "found_finding": (f["finding"] or "")[:60],
                "gold_finding": (g["finding"] or "")[:60],
            }
        )
    extra = [f["text"][:80] for j, f in enumerate(found) if j not in used]
    return {
        "gold": len(golds),
        "found": len(found),
        "matched": len(used),
        "rows": rows,
        "unmatched_found": extra,
    }


def evaluate(split: str, verbose: bool = False) -> dict:
    from scrclf.reviews.finder import find_recommendations
    from scrclf.reviews.readers import read_document

    per_format: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    documents = []
    # variants/ holds development-only text documents (see the fixtures' README)
    paths = sorted(FIXTURES.glob("*.gold.json")) + sorted(FIXTURES.glob("variants/*.gold.json"))
    for gold_path in paths:
        gold = json.loads(gold_path.read_text(encoding="utf-8"))
        if (split == "held_out") != bool(gold["held_out"]) and split != "all":
            continue
        doc = read_document(FIXTURES / gold["document"])
        found = [r.to_dict() for r in find_recommendations(doc.blocks)]
        result = score_document(gold, found)
        documents.append(
            {"document": gold["document"], **{k: result[k] for k in ("gold", "found", "matched")}}
        )
        c = per_format[gold["format"]]
        c["documents"] += 1
        c["gold"] += result["gold"]
        c["found"] += result["found"]
        c["matched"] += result["matched"]
        for row in result["rows"]:
            if row["matched"]:
                for key in ("start", "end", "pairing", "number", "addressee", "page"):
                    c[key] += bool(row[key])
                c["exact"] += bool(row["start"] and row["end"])
        if verbose:
            bad = [
                r
                for r in result["rows"]
                if not r["matched"] or not (r["start"] and r["end"] and r["pairing"])
            ]
            if bad or result["unmatched_found"]:
                print(
                    f"== {gold['document']} {gold['features']} gold={result['gold']} "
                    f"found={result['found']} matched={result['matched']}"
                )
                for r in bad:
                    print("   ", r)
                for t in result["unmatched_found"]:
                    print("    EXTRA", t)
    table = {}
    for fmt, c in sorted(per_format.items()):
        m = max(c["matched"], 1)
        table[fmt] = {
            "documents": c["documents"],
            "gold": c["gold"],
            "found": c["found"],
            "precision": c["matched"] / max(c["found"], 1),
            "recall": c["matched"] / max(c["gold"], 1),
            "exact_boundaries": c["exact"] / m,
            "start": c["start"] / m,
            "end": c["end"] / m,
            "finding_pairing": c["pairing"] / m,
            "number": c["number"] / m,
            "addressee": c["addressee"] / m,
            "page": c["page"] / m,
        }
    return {"split": split, "per_format": table, "documents": documents}


def hundred_page_pdf(path: Path) -> int:
    """A 100-page report: the generator's PDF renderer with a long list of recommendations."""
    import random

    sys.path.insert(0, str(ROOT / "scripts"))
    import make_review_fixtures as gen

    rng = random.Random(7)
    corpus = gen.load_corpus()
    rows = [r for rid in sorted(corpus) for r in corpus[rid]]
    doc = gen.build_doc("long", "cited", rows[:300], rng, appendix=True)
    for _ in range(3):  # analysis chapters to reach 100 pages
        doc.elements[5:5] = [
            ("para", r["synopsis"] if "synopsis" in r else gen.clean(r["finding"] or r["text"]))
            for r in rows[300:700]
        ]
    gen.render_pdf(doc, path, two_column=True, rng=rng)
    from pypdf import PdfReader

    return len(PdfReader(str(path)).pages)


def time_long_pdf(model: str | None, repeats: int = 3) -> dict:
    from scrclf.reviews import run_review

    with tempfile.TemporaryDirectory() as tmp:
        pdf = Path(tmp) / "long_review.pdf"
        pages = hundred_page_pdf(pdf)
        timings = {}
        from scrclf.reviews.finder import find_recommendations
        from scrclf.reviews.readers import read_document

        t = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            doc = read_document(pdf)
            items = find_recommendations(doc.blocks)
            t.append(time.perf_counter() - t0)
        timings["read_and_find_s"] = min(t)
        result = {"pages": pages, "recommendations": len(items), **timings}
        if model:
            from scrclf.reviews.classify import load_model

            clf = load_model(model)  # loading excluded from the timing
            for explain in (False, True):
                t = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    run_review([pdf], clf, Path(tmp) / "out", explain=explain, progress=False)
                    t.append(time.perf_counter() - t0)
                result[f"end_to_end_s{'_with_explanations' if explain else ''}"] = min(t)
            result["model"] = os.path.basename(os.path.normpath(model))
            result["backend"] = clf.backend
        return result


def to_markdown(report: dict) -> str:
    lines = [
        f"# Review extraction: {report['split']} documents",
        "",
        f"`{report['command']}` on {report['machine']}.",
        "",
        "| format | docs | gold | found | precision | recall | exact boundaries | start | end "
        "| finding pairing | number | addressee | page |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fmt, r in report["per_format"].items():
        lines.append(
            f"| {fmt} | {r['documents']} | {r['gold']} | {r['found']} | {r['precision']:.3f} "
            f"| {r['recall']:.3f} | {r['exact_boundaries']:.3f} | {r['start']:.3f} | "
            f"{r['end']:.3f} | {r['finding_pairing']:.3f} | {r['number']:.3f} | "
            f"{r['addressee']:.3f} | {r['page']:.3f} |"
        )
    lines += [
        "",
        "Targets: precision and recall >= 0.95 per format, exact boundaries >= 0.90, "
        "finding pairing >= 0.85.",
        "",
    ]
    if report.get("timing"):
        t = report["timing"]
        lines += [
            "## A 100-page PDF",
            "",
            f"{t['pages']} pages, {t['recommendations']} recommendations found; best of 3 runs.",
            "",
            "| step | seconds |",
            "|---|---:|",
            f"| read and find (no model) | {t['read_and_find_s']:.2f} |",
        ]
        for key in ("end_to_end_s", "end_to_end_s_with_explanations"):
            if key in t:
                lines.append(
                    f"| end to end, {key.replace('end_to_end_s', 'classified').replace('_', ' ')} "
                    f"({t['model']}, {t['backend']}) | {t[key]:.2f} |"
                )
        lines += ["", "Target: at most 10 s end to end on 2 cores, model loading excluded.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("held_out", "dev", "all"), default="held_out")
    parser.add_argument("--model", default=None, help="exported model for the end-to-end timing")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print every miss")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    report = evaluate(args.split, args.verbose)
    if not args.no_timing:
        report["timing"] = time_long_pdf(args.model)
    shown = [
        a if not a.startswith("/") else os.path.relpath(a, ROOT) for a in (argv or sys.argv[1:])
    ]
    report["command"] = " ".join(["python benchmarks/review_extraction.py", *shown])
    report["machine"] = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    print(to_markdown(report))
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"review_extraction_{args.split}"
        (args.out / f"{name}.json").write_text(
            json.dumps(report, indent=2) + "\n", encoding="utf-8"
        )
        (args.out / f"{name}.md").write_text(to_markdown(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
