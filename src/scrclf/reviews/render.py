"""Markdown and self-contained HTML renderings of a review profile.

The HTML report must open from disk on a machine with no network: styles are inline, the
charts are inline SVG drawn here, and nothing is fetched. The template is package data
(``template.html``) so its look can change without touching code.
"""

from __future__ import annotations

from html import escape
from importlib import resources
from string import Template
from typing import Any

TEMPLATE = "template.html"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f"[{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def _num(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def _sections(profile: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]], str]]:
    """(title, header, rows, note) for every table of the report, shared by both renderings."""
    t1 = profile["table1"]
    out = [
        (
            "Table 1: recommendations per review",
            ["reviews", "recommendations", "mean", "median", "max", "min"],
            [
                [
                    t1["reviews"],
                    t1["recommendations"],
                    _num(t1["mean"]),
                    _num(t1["median"]),
                    _num(t1["max"]),
                    _num(t1["min"]),
                ]
            ],
            f"The 2011 study counted {profile['reference_2011']['recommendations']} "
            f"recommendations in {profile['reference_2011']['reviews']} reviews "
            f"(mean {profile['reference_2011']['mean_per_review']:.1f}).",
        ),
        (
            "Distribution of recommendations per review",
            ["recommendations", "reviews"],
            [[b["bin"], b["reviews"]] for b in t1["distribution"]],
            "",
        ),
        (
            "Recommendations by addressee",
            ["addressee", "recommendations", "share", "reviews"],
            [
                [a["addressee"], a["recommendations"], _pct(a["share"]), a["reviews"]]
                for a in t1["by_addressee"]
            ],
            "",
        ),
        (
            "Table 2: themes",
            [
                "theme",
                "reviews with any",
                "share of reviews",
                "95% CI",
                "share of items (primary)",
                "95% CI",
                "share of items (any position)",
                "95% CI",
            ],
            [
                [
                    t["theme"],
                    t["reviews_with_any"],
                    _pct(t["share_of_reviews"]),
                    _ci(t["share_of_reviews_ci"]),
                    _pct(t["share_primary"]),
                    _ci(t["share_primary_ci"]),
                    _pct(t["share_any_position"]),
                    _ci(t["share_any_position_ci"]),
                ]
                for t in profile["table2"]
            ],
            "",
        ),
    ]
    s = profile["action_strength"]
    ref = s["reference"]
    out.append(
        (
            "Action strength",
            [
                "strength",
                "items",
                "share",
                "95% CI",
                "Hibbert et al. 2018 (1,137 RCA recommendations)",
            ],
            [
                [r["label"], r["items"], _pct(r["share"]), _ci(r["ci"]), _pct(ref[r["label"]])]
                for r in s["overall"]
            ]
            + [
                [
                    "reviews with no strong action",
                    "",
                    _pct(s["reviews_without_strong"]),
                    _ci(s["reviews_without_strong_ci"]),
                    _pct(ref["analyses_without_strong"]),
                ]
            ],
            "Patient-safety root-cause analyses for comparison: 48% weak, 44% medium, "
            "8% strong; 72% of analyses had no strong recommendation.",
        )
    )
    out.append(
        (
            "Action strength per review",
            ["review", "weak", "intermediate", "strong"],
            [[r["review_id"], r["weak"], r["intermediate"], r["strong"]] for r in s["per_review"]],
            "",
        )
    )
    e = profile["evidence"]
    out.append(
        (
            "Evidence basis",
            ["evidence", "items", "share", "95% CI"],
            [[r["label"], r["items"], _pct(r["share"]), _ci(r["ci"])] for r in e["labels"]]
            + [
                [
                    "research, guidance or local data",
                    "",
                    _pct(e["research_guidance_or_local_data"]),
                    _ci(e["research_guidance_or_local_data_ci"]),
                ],
                ["single case or none stated", "", _pct(e["single_case_or_none_stated"]), ""],
            ],
            "",
        )
    )
    out.append(
        (
            "Documents",
            ["review", "file", "format", "pages", "recommendations", "status"],
            [
                [
                    r["review_id"],
                    r["file"].rsplit("/", 1)[-1],
                    r["format"] or "",
                    r["pages"] or "",
                    r["recommendations"],
                    r["status"] + (f": {r['message']}" if r["message"] else ""),
                ]
                for r in profile["reviews"]
            ],
            "",
        )
    )
    return out


def render_markdown(profile: dict[str, Any], items: list[dict[str, Any]]) -> str:
    lines = [
        "# Review profile",
        "",
        f"{profile['documents']} documents, {profile['table1']['reviews']} reviews with "
        f"recommendations, {profile['table1']['recommendations']} recommendations; "
        f"{profile['flagged_for_check']} flagged for a person to check. Intervals: "
        f"{profile['intervals']}.",
        "",
    ]
    for title, header, rows, note in _sections(profile):
        lines += [f"## {title}", ""] + _md_table(header, rows)
        if note:
            lines += [note, ""]
    lines += ["## Recommendations", ""]
    lines += _md_table(
        ["id", "page", "addressee", "themes", "evidence", "strength", "check", "text"],
        [
            [
                i["id"],
                i["page"] or "",
                i["addressee"] or "",
                ";".join(i.get("themes", [])),
                i.get("evidence", ""),
                i.get("action_strength", ""),
                "check" if i.get("check") else "",
                i["text"].replace("|", "/")[:300],
            ]
            for i in items
        ],
    )
    return "\n".join(lines)


def _bar_chart(
    title: str, rows: list[tuple[str, float | None]], ref: dict[str, float] | None = None
) -> str:
    width, bar_h, label_w = 420, 18, 170
    height = bar_h * len(rows) + 30
    parts = [
        f'<figure><svg role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for k, (label, value) in enumerate(rows):
        y = 10 + k * bar_h
        w = (width - label_w - 50) * (value or 0)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 12}" font-size="11" text-anchor="end">'
            f"{escape(label)}</text>"
        )
        parts.append(
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 5}" fill="#3b6fb6"/>'
        )
        if ref and label in ref:
            rx = label_w + (width - label_w - 50) * ref[label]
            parts.append(
                f'<line x1="{rx:.1f}" x2="{rx:.1f}" y1="{y}" y2="{y + bar_h - 1}" '
                f'stroke="#d9480f" stroke-width="2"/>'
            )
        parts.append(
            f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" font-size="11">{_pct(value)}</text>'
        )
    parts.append(f"</svg><figcaption>{escape(title)}</figcaption></figure>")
    return "".join(parts)


def _highlight(text: str, drivers: list[list]) -> str:
    weights = {int(j): float(w) for j, w in drivers or []}
    top = max(weights.values(), default=0) or 1.0
    out = []
    for j, word in enumerate(text.split()):
        if j in weights:
            out.append(
                f'<mark style="--w:{0.15 + 0.6 * weights[j] / top:.2f}" '
                f'title="score drop {weights[j]:.2f} when removed">{escape(word)}</mark>'
            )
        else:
            out.append(escape(word))
    return " ".join(out)


def render_html(profile: dict[str, Any], items: list[dict[str, Any]]) -> str:
    body = [
        "<h1>Review profile</h1>",
        f"<p class='note'>{profile['documents']} documents, {profile['table1']['reviews']} "
        f"reviews with recommendations, {profile['table1']['recommendations']} "
        f"recommendations; {profile['flagged_for_check']} flagged for a person to check. "
        f"Intervals: {escape(profile['intervals'])}. Model: "
        f"{escape(str(profile.get('model', {}).get('path')))} "
        f"({escape(str(profile.get('model', {}).get('backend')))}).</p>",
    ]
    charts = [
        _bar_chart(
            "Share of reviews with at least one recommendation on each theme",
            [(t["theme"], t["share_of_reviews"]) for t in profile["table2"]],
        ),
        _bar_chart(
            "Action strength (orange: Hibbert et al. 2018)",
            [(r["label"], r["share"]) for r in profile["action_strength"]["overall"]],
            {
                k: profile["action_strength"]["reference"][k]
                for k in ("weak", "intermediate", "strong")
            },
        ),
        _bar_chart(
            "Evidence basis", [(r["label"], r["share"]) for r in profile["evidence"]["labels"]]
        ),
    ]
    body.append("<div class='charts'>" + "".join(charts) + "</div>")
    for title, header, rows, note in _sections(profile):
        body.append(
            f"<h2>{escape(title)}</h2><table><thead><tr>"
            + "".join(f"<th>{escape(h)}</th>" for h in header)
            + "</tr></thead><tbody>"
        )
        for row in rows:
            body.append(
                "<tr>"
                + "".join(
                    f"<td class='n'>{escape(str(c))}</td>"
                    if isinstance(c, (int, float)) or str(c).rstrip("%").replace(".", "").isdigit()
                    else f"<td>{escape(str(c))}</td>"
                    for c in row
                )
                + "</tr>"
            )
        body.append("</tbody></table>")
        if note:
            body.append(f"<p class='note'>{escape(note)}</p>")
    body.append(
        "<h2>Recommendations</h2><p class='note'>Highlighted words moved the primary "
        "theme's score most when removed (occlusion); hover for the size.</p>"
    )
    for i in items:
        drivers = (i.get("drivers") or {}).get("themes", [])
        flag = " <span class='flag'>check</span>" if i.get("check") else ""
        labels = "".join(
            f"<span>{escape(x)}</span>"
            for x in [*i.get("themes", []), i.get("evidence") or "", i.get("action_strength") or ""]
            if x
        )
        body.append(
            f"<div class='item'><div class='meta'>{escape(i['id'])} · {escape(i['source'])}"
            f"{' · page ' + str(i['page']) if i['page'] else ''} · "
            f"{escape(i['addressee'] or 'addressee not stated')}"
            f"{' · confidence ' + format(i['confidence'], '.2f') if i.get('confidence') is not None else ''}"
            f"{flag}</div><div class='labels'>{labels}</div>"
            f"<p>{_highlight(i['text'], drivers)}</p>"
            + (
                f"<p class='meta'>Finding: {escape(i['finding'][:400])}</p>"
                if i.get("finding")
                else ""
            )
            + "</div>"
        )
    template = Template(resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8"))
    return template.substitute(title="Review profile", body="\n".join(body))
