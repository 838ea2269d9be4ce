"""The journey map as one self-contained HTML page: charts as inline SVG, no requests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from streams.clickhouse.report import (
    SANKEY_STEPS,
    JourneyMap,
    duration_label,
    read_map,
    shown_score,
)

PALETTE = ["#3b6fb6", "#e07b39", "#4aa36b", "#c94f6d", "#8a6bbf", "#c2a13b", "#3aa6a6"]


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:32px;color:#1d2430;
background:#fafbfc}h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#5b6576}section{background:#fff;border:1px solid #e3e6eb;border-radius:8px;
padding:16px 20px;margin:16px 0}table{border-collapse:collapse;width:100%}
td,th{padding:4px 8px;border-bottom:1px solid #eef0f3;text-align:left}th{color:#5b6576;
font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}.small{color:#a33}
svg text{font:12px system-ui,sans-serif;fill:#1d2430}
"""


def _esc(text: object) -> str:
    return (
        str(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
    )


def _funnel_svg(funnel: list[dict]) -> str:
    if not funnel:
        return "<p>No journeys in this range.</p>"
    top = max(s["journeys"] for s in funnel) or 1
    row, width, left = 34, 520, 130
    parts = []
    for i, s in enumerate(funnel):
        y = i * row
        w = max(2, width * s["journeys"] / top)
        conversion = "" if s["conversion"] is None else f" · {s['conversion']}% from previous"
        parts.append(
            f'<text x="0" y="{y + 21}">{_esc(s["stage"])}</text>'
            f'<rect x="{left}" y="{y + 6}" width="{w:.1f}" height="22" rx="3" '
            f'fill="{PALETTE[0]}"/><text x="{left + w + 8:.1f}" y="{y + 21}">'
            f"{s['journeys']:,} journeys{conversion} · median {duration_label(s['median_seconds'])}"
            "</text>"
        )
    height = row * len(funnel) + 8
    return f'<svg width="1000" height="{height}" role="img">{"".join(parts)}</svg>'


def _sankey_svg(flows: list[dict]) -> str:
    """Columns are positions in the path (1st touchpoint, 2nd, ...); node heights follow
    the journeys through them; links are drawn as bands."""
    if not flows:
        return "<p>No paths in this range.</p>"
    nodes: dict[str, dict] = {}
    for flow in flows:
        for end, key in (("out", "source"), ("in", "target")):
            node = nodes.setdefault(flow[key], {"in": 0, "out": 0})
            node[end] += flow["journeys"]
    columns: dict[int, list[str]] = {}
    for name in nodes:
        columns.setdefault(int(name.split(":")[0]), []).append(name)
    total = max(sum(max(nodes[n]["in"], nodes[n]["out"]) for n in col) for col in columns.values())
    height, gap, col_width, node_width = 420, 6, 165, 12
    scale = (height - gap * max(len(c) for c in columns.values())) / total
    place: dict[str, list[float]] = {}  # name -> [x, y, h, out_offset, in_offset]
    for column, names in sorted(columns.items()):
        names.sort(key=lambda n: -max(nodes[n]["in"], nodes[n]["out"]))
        y = 0.0
        for name in names:
            h = max(1.0, max(nodes[name]["in"], nodes[name]["out"]) * scale)
            place[name] = [(column - 1) * col_width, y, h, 0.0, 0.0]
            y += h + gap
    colours: dict[str, str] = {}  # by kind of the source node
    links, rects = [], []
    for flow in flows:
        src, dst = place[flow["source"]], place[flow["target"]]
        band = flow["journeys"] * scale
        kind = flow["source"].split(":", 1)[1]
        colour = colours.setdefault(kind, PALETTE[len(colours) % len(PALETTE)])
        x0, x1 = src[0] + node_width, dst[0]
        y0, y1 = src[1] + src[3] + band / 2, dst[1] + dst[4] + band / 2
        src[3] += band
        dst[4] += band
        mid = (x0 + x1) / 2
        links.append(
            f'<path d="M{x0:.1f},{y0:.1f} C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},'
            f'{y1:.1f}" stroke="{colour}" stroke-opacity="0.35" stroke-width="{band:.1f}" '
            f'fill="none"><title>{_esc(flow["source"])} → {_esc(flow["target"])}: '
            f"{flow['journeys']:,}</title></path>"
        )
    for name, (x, y, h, _, _) in place.items():
        kind = name.split(":", 1)[1]
        colour = colours.get(kind, "#7a8494")
        rects.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{node_width}" height="{h:.1f}" '
            f'fill="{colour}"/><text x="{x + node_width + 3:.1f}" y="{y + min(h, 14) - 2:.1f}">'
            f"{_esc(kind)}</text>"
        )
    width = col_width * len(columns) + 60
    return (
        f'<svg width="{width}" height="{height + 10}" role="img">'
        f"{''.join(links)}{''.join(rects)}</svg>"
    )


def _leak_trend_svg(weeks: list[dict]) -> str:
    if not weeks:
        return "<p>No leaks in this range.</p>"
    labels = sorted({w["week"] for w in weeks})
    categories = sorted({w["category"] for w in weeks})
    top = max(w["leak_rate"] for w in weeks) or 1
    width, height, left, bottom = 700, 220, 40, 30
    step = (width - left - 20) / max(1, len(labels) - 1)
    parts = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        'stroke="#c9ced6"/>'
    ]
    for i, label in enumerate(labels):
        parts.append(f'<text x="{left + i * step:.1f}" y="{height - 8}">{_esc(label)}</text>')
    for n, category in enumerate(categories):
        colour = PALETTE[n % len(PALETTE)]
        points = [
            (
                left + labels.index(w["week"]) * step,
                height - bottom - (height - bottom - 20) * w["leak_rate"] / top,
            )
            for w in weeks
            if w["category"] == category
        ]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
            + " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            + '"/>'
        )
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>' for x, y in points]
        parts.append(
            f'<text x="{width - 150}" y="{18 + 16 * n}" style="fill:{colour}">'
            f"● {_esc(category)}</text>"
        )
    parts.append(f'<text x="0" y="14">{top:.1f}</text><text x="0" y="{height - bottom}">0</text>')
    return f'<svg width="{width + 20}" height="{height}" role="img">{"".join(parts)}</svg>'


def _table(rows: list[dict], columns: list[tuple[str, str]], empty: str) -> str:
    if not rows:
        return f"<p>{empty}</p>"
    head = "".join(f"<th>{_esc(title)}</th>" for _, title in columns)
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row[key]
            if isinstance(value, list):
                value = " → ".join(map(str, value)) if key == "path" else ", ".join(map(str, value))
            numeric = isinstance(row[key], int | float) and not isinstance(row[key], bool)
            cells.append(f'<td class="{"n" if numeric else ""}">{_esc(value)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _scores_table(scores: list[dict]) -> str:
    rows = [
        {
            **s,
            "score": shown_score(s["score"]),
            "sample": f"{s['responses']:,}" + (" (too few to trust)" if s["small_sample"] else ""),
        }
        for s in scores
    ]
    return _table(
        rows,
        [
            ("metric", "metric"),
            ("touchpoint", "touchpoint"),
            ("score", "score"),
            ("sample", "answers"),
        ],
        "No survey answers in this range.",
    )


def as_html(found: JourneyMap) -> str:
    sections = [
        (
            "Funnel",
            "Journeys reaching each stage (or beyond), conversion from the stage "
            "before, median time between the two stages.",
            _funnel_svg(found.funnel),
        ),
        (
            "Paths",
            f"The first {SANKEY_STEPS} touchpoints of each journey (repeats in a row "
            "collapsed) and how it ended.",
            _sankey_svg(found.flows),
        ),
        (
            "Top paths to the goal and to each leak",
            "",
            _table(
                found.paths,
                [
                    ("outcome", "outcome"),
                    ("path", "path"),
                    ("journeys", "journeys"),
                    ("share", "share %"),
                ],
                "No paths.",
            ),
        ),
        (
            "Leak rates by category over time",
            "Leaks per 100 journeys opened that week.",
            _leak_trend_svg(found.leak_weeks),
        ),
        (
            "Leaks by rule",
            "",
            _table(
                found.leaks,
                [
                    ("rule", "rule"),
                    ("category", "category"),
                    ("leaks", "leaks"),
                    ("leak_rate", "per 100 journeys"),
                ],
                "No leaks.",
            ),
        ),
        (
            "Scores per touchpoint",
            "NPS -100…100, CSAT % satisfied, CES mean effort (1-7).",
            _scores_table(found.scores),
        ),
        (
            "Customers at risk now",
            "Health below 50, or a leak in the last 30 days on a "
            "journey that has not reached its goal.",
            _table(
                found.at_risk,
                [
                    ("customer_key", "customer"),
                    ("health", "health"),
                    ("segment", "segment"),
                    ("open_leaks", "open leaks"),
                    ("leak_rules", "leaks"),
                ],
                "Nobody at risk.",
            ),
        ),
    ]
    body = "".join(
        f"<section><h2>{_esc(title)}</h2><p class='sub'>{_esc(note)}</p>{content}</section>"
        for title, note, content in sections
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>parcours · {_esc(found.journey)} journey map</title><style>{STYLE}</style>"
        f"</head><body><h1>Journey map: {_esc(found.journey)}</h1><p class='sub'>Journeys "
        f"opened {_esc(found.since)} - {_esc(found.until)} (UTC). Made by parcours report."
        f"</p>{body}</body></html>"
    )


def write_report(
    clickhouse_url: str, journey: str, since: datetime, until: datetime, html_path: Path
) -> JourneyMap:
    """Read the journey map and write its HTML page to `html_path`."""
    from streams.clickhouse.client import connect

    client = connect(clickhouse_url)
    try:
        found = read_map(client, journey, since, until)
    finally:
        client.close()
    save_html(found, html_path)
    return found


def save_html(found: JourneyMap, html_path: Path) -> None:
    """Write the map's page to `html_path`, making its folder if needed."""
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(as_html(found), encoding="utf-8")
