#!/usr/bin/env python3
"""Plot bench/scale.sh's TSV as an SVG, with the standard library only.

usage: bench/plot.py DATA.tsv OUT.svg TITLE [--x COL] [--y COL] [--xlabel TEXT] [--ylabel TEXT]

Columns: step, and the x and y columns (default: images, per_image_ms, as
bench/scale.sh writes them). One line per step: y (the cost per unit of
work) against x (log scale). A flat line is linear growth; a falling one is
better than linear.
"""
import argparse
import csv
import math


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("title")
    ap.add_argument("--x", default="images")
    ap.add_argument("--y", default="per_image_ms")
    ap.add_argument("--xlabel", default="images in the package")
    ap.add_argument("--ylabel", default="ms per image")
    a = ap.parse_args()
    data, out, title = a.data, a.out, a.title
    series: dict[str, list[tuple[float, float]]] = {}
    with open(data, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            series.setdefault(row["step"], []).append((float(row[a.x]), float(row[a.y])))
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ymax = max(y for pts in series.values() for _, y in pts) * 1.15 or 1.0
    w, h, left, right, top, bottom = 640, 400, 70, 150, 40, 50
    pw, ph = w - left - right, h - top - bottom
    lx0, lx1 = math.log10(xs[0]), math.log10(xs[-1]) if len(xs) > 1 else math.log10(xs[0]) + 1

    def px(x: float) -> float:
        return left + (math.log10(x) - lx0) / ((lx1 - lx0) or 1) * pw

    def py(y: float) -> float:
        return top + ph - y / ymax * ph

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
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
    parts.append(f'<text x="{left + pw / 2}" y="{h - 10}" text-anchor="middle">{a.xlabel} (log scale)</text>')
    parts.append(f'<text x="16" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 16 {top + ph / 2})">{a.ylabel}</text>')
    for k, (step, pts) in enumerate(sorted(series.items())):
        c = colors[k % len(colors)]
        pts.sort()
        d = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(pts))
        parts.append(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"/>')
        ly = top + 10 + 18 * k
        parts.append(f'<line x1="{left + pw + 15}" y1="{ly}" x2="{left + pw + 35}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        parts.append(f'<text x="{left + pw + 40}" y="{ly + 4}">{step}</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
