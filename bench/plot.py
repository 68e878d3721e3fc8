#!/usr/bin/env python3
"""Plot a bench script's TSV as an SVG, with the standard library only.

usage: bench/plot.py [--metrics M1,M2,...] [--x COL --y COL --xlabel T --ylabel T] DATA.tsv OUT.svg TITLE

Two kinds of TSV, told apart by their header:

bench/scale.sh (columns images, step, seconds, per_image_ms, ...): one line
per step: time per image (ms, y) against the number of images (x, log
scale). A flat line is linear growth; a falling one is better than linear.
--x, --y, --xlabel and --ylabel name other columns of such a TSV
(bench/scale-archive.sh: s_per_gib against gib).

bench/scale-agent.sh (columns blobs, ..., metric, label, value, unit: one
row per size and measurement): two panels on log-log axes against the
blobs held (x): times (units s and ms, drawn in ms) and sizes (MiB and KiB,
drawn in MiB: memory, disk). A dashed guide in each panel has slope 1: a
line parallel to it grows linearly, a flatter one better than linearly.
--metrics keeps only those metrics (in that order); rows of other units
(counts, rates) are never drawn.
"""
import argparse
import csv
import math

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
          "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
DASHES = ["", "6,3", "2,2"]


def esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metrics", default="", help="comma-separated metrics to draw (long TSV only; default all)")
    ap.add_argument("--x", default="images", help="x column (step TSV)")
    ap.add_argument("--y", default="per_image_ms", help="y column (step TSV)")
    ap.add_argument("--xlabel", default="images in the package")
    ap.add_argument("--ylabel", default="ms per image")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("title")
    a = ap.parse_args()
    with open(a.data, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and "metric" in rows[0]:
        parts = plot_long(rows, a.title, [m for m in a.metrics.split(",") if m])
    else:
        parts = plot_steps(rows, a.title, a.x, a.y, a.xlabel, a.ylabel)
    with open(a.out, "w") as f:
        f.write("\n".join(parts) + "\n")


def draw_series(parts: list[str], pts: list[tuple[float, float]], px, py, color: str, dash_attr: str = "",
                title: str = "") -> None:
    """A line through pts with a dot at each (titled with its value when title is given)."""
    d = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(pts))
    parts.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>')
    for x, y in pts:
        tip = f"<title>{title}: {y:.4g}</title>" if title else ""
        end = f">{tip}</circle>" if tip else "/>"
        parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"{end}')


def plot_steps(rows: list[dict[str, str]], title: str, xcol: str = "images", ycol: str = "per_image_ms",
               xlabel: str = "images in the package", ylabel: str = "ms per image") -> list[str]:
    """bench/scale.sh: ms per image against images, one line per step."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        series.setdefault(row["step"], []).append((float(row[xcol]), float(row[ycol])))
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ymax = max(y for pts in series.values() for _, y in pts) * 1.15 or 1.0
    w, h, left, right, top, bottom = 640, 400, 70, 150, 40, 50
    pw, ph = w - left - right, h - top - bottom
    lx0, lx1 = math.log10(xs[0]), math.log10(xs[-1]) if len(xs) > 1 else math.log10(xs[0]) + 1

    def px(x: float) -> float:
        return left + (math.log10(x) - lx0) / ((lx1 - lx0) or 1) * pw

    def py(y: float) -> float:
        return top + ph - y / ymax * ph

    colors = COLORS[:6]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>']
    for x in xs:
        parts.append(f'<line x1="{px(x):.1f}" y1="{top + ph}" x2="{px(x):.1f}" y2="{top + ph + 5}" stroke="black"/>')
        parts.append(f'<text x="{px(x):.1f}" y="{top + ph + 18}" text-anchor="middle">{int(x)}</text>')
    for i in range(5):
        y = ymax * i / 4
        parts.append(f'<line x1="{left - 5}" y1="{py(y):.1f}" x2="{left + pw}" y2="{py(y):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{h - 10}" text-anchor="middle">{xlabel} (log scale)</text>')
    parts.append(f'<text x="16" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 16 {top + ph / 2})">{ylabel}</text>')
    for k, (step, pts) in enumerate(sorted(series.items())):
        c = colors[k % len(colors)]
        draw_series(parts, sorted(pts), px, py, c)
        ly = top + 10 + 18 * k
        parts.append(f'<line x1="{left + pw + 15}" y1="{ly}" x2="{left + pw + 35}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        parts.append(f'<text x="{left + pw + 40}" y="{ly + 4}">{step}</text>')
    parts.append("</svg>")
    return parts


# unit → (panel, factor to the panel's unit)
PANELS = {"s": ("time", 1000.0), "ms": ("time", 1.0), "MiB": ("size", 1.0), "KiB": ("size", 1 / 1024)}
PANEL_AXIS = {"time": "ms (log scale)", "size": "MiB (log scale)"}
PANEL_TITLE = {"time": "time", "size": "memory and disk"}


def plot_long(rows: list[dict[str, str]], title: str, only: list[str]) -> list[str]:
    """bench/scale-agent.sh: each metric against blobs, log-log, two panels."""
    series: dict[str, dict[str, list[tuple[float, float]]]] = {"time": {}, "size": {}}
    labels: dict[str, str] = {}
    order: list[str] = []
    for row in rows:
        m, unit = row["metric"], row["unit"]
        if unit not in PANELS or (only and m not in only):
            continue
        panel, factor = PANELS[unit]
        x, y = float(row["blobs"]), float(row["value"]) * factor
        if x <= 0 or y <= 0:
            continue  # nothing to draw on a log axis
        series[panel].setdefault(m, []).append((x, y))
        labels[m] = row.get("label") or m
        if m not in order:
            order.append(m)
    if only:
        order = [m for m in only if m in order]
    xs = sorted({x for p in series.values() for pts in p.values() for x, _ in pts})
    if not xs:
        raise SystemExit("plot.py: nothing to draw")
    pw, ph, left, legend, top, bottom = 330, 330, 75, 255, 60, 50
    block = left + pw + legend
    w, h = 2 * block, top + ph + bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="14">{esc(title)}</text>']
    lx0 = math.log10(xs[0])
    lx1 = math.log10(xs[-1]) if len(xs) > 1 else lx0 + 1
    for b, panel in enumerate(["time", "size"]):
        ser = series[panel]
        if not ser:
            continue
        ox = b * block + left
        ys = [y for pts in ser.values() for _, y in pts]
        ly0 = math.floor(math.log10(min(ys)))
        ly1 = math.ceil(math.log10(max(ys)))
        if ly1 == ly0:
            ly1 += 1

        def px(x: float) -> float:
            return ox + (math.log10(x) - lx0) / ((lx1 - lx0) or 1) * pw

        def py(y: float) -> float:
            return top + ph - (math.log10(y) - ly0) / (ly1 - ly0) * ph

        parts.append(f'<text x="{ox + pw / 2}" y="{top - 12}" text-anchor="middle" font-size="13">{PANEL_TITLE[panel]}</text>')
        parts.append(f'<line x1="{ox}" y1="{top + ph}" x2="{ox + pw}" y2="{top + ph}" stroke="black"/>')
        parts.append(f'<line x1="{ox}" y1="{top}" x2="{ox}" y2="{top + ph}" stroke="black"/>')
        for x in xs:
            parts.append(f'<line x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" y2="{top + ph + 5}" stroke="#eee"/>')
            parts.append(f'<text x="{px(x):.1f}" y="{top + ph + 18}" text-anchor="middle">{int(x)}</text>')
        for e in range(ly0, ly1 + 1):
            y = 10.0 ** e
            lab = f"{y:g}" if -3 <= e <= 5 else f"1e{e}"
            parts.append(f'<line x1="{ox - 5}" y1="{py(y):.1f}" x2="{ox + pw}" y2="{py(y):.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{ox - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{lab}</text>')
        parts.append(f'<text x="{ox + pw / 2}" y="{h - 12}" text-anchor="middle">blobs held (log scale)</text>')
        cy = top + ph / 2
        parts.append(f'<text x="{ox - 52}" y="{cy}" text-anchor="middle" transform="rotate(-90 {ox - 52} {cy})">{PANEL_AXIS[panel]}</text>')
        # slope-1 guide from the lower left: a parallel line grows linearly
        if len(xs) > 1:
            gy0 = 10.0 ** (ly0 + 0.1 * (ly1 - ly0))
            gy1 = gy0 * xs[-1] / xs[0]
            parts.append(f'<line x1="{px(xs[0]):.1f}" y1="{py(gy0):.1f}" x2="{px(xs[-1]):.1f}" y2="{py(gy1):.1f}" '
                         f'stroke="#999" stroke-dasharray="4,4"/>')
            parts.append(f'<text x="{px(xs[-1]) - 4:.1f}" y="{py(gy1) - 6:.1f}" text-anchor="end" fill="#777">linear</text>')
        k = 0
        for m in order:
            if m not in ser:
                continue
            c, dash = COLORS[k % len(COLORS)], DASHES[(k // len(COLORS)) % len(DASHES)]
            da = f' stroke-dasharray="{dash}"' if dash else ""
            draw_series(parts, sorted(ser[m]), px, py, c, da, esc(labels[m]))
            ly = top + 8 + 18 * k
            parts.append(f'<line x1="{ox + pw + 12}" y1="{ly}" x2="{ox + pw + 32}" y2="{ly}" stroke="{c}" stroke-width="2"{da}/>')
            parts.append(f'<text x="{ox + pw + 36}" y="{ly + 4}" font-size="11">{esc(labels[m])}</text>')
            k += 1
    parts.append("</svg>")
    return parts


if __name__ == "__main__":
    main()
