"""`make bench-report`: the figures of the last `make bench` as one self-contained HTML page (inline SVG, no
scripts, nothing fetched from elsewhere): the headline figures against their targets, throughput per scenario and
latency percentile curves."""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from pathlib import Path

from campaign_manager.bench import RESULTS_PATH

# headline figure -> (label, target, True if higher is better)
TARGETS = {
    "signals_per_s": ("signals/s end-to-end, as fast as possible", 20_000, True),
    "p99_ms": ("p99 signal → event at 1,000 signals/s (ms)", 25, False),
    "worker_peak_rss_mb": ("worker peak RSS (MB)", 250, False),
    "stored_ratio": ("throughput with campaigns already stored ÷ on an empty database", 0.9, True),
    "ticks_per_s": ("price ticks/s absorbed", None, True),
    "stop_event_p99_ms": ("p99 price tick through a stop → CampaignInvalidated (ms)", 250, False),
}
WIDTH, HEIGHT, MARGIN = 640, 300, 72
COLOURS = ("#1f5fa8", "#b5531c", "#2e7d32", "#6a3d9a", "#8c6d00", "#444444")


def headline_rows(summary: dict) -> str:
    rows = []
    for key, (label, target, higher_is_better) in TARGETS.items():
        if key not in summary:
            continue
        value = summary[key]
        if target is None:
            verdict, target_text = "", "–"
        else:
            met = value >= target if higher_is_better else value <= target
            verdict, target_text = ("met" if met else "not met"), f"{'≥' if higher_is_better else '≤'} {target:,}"
        rows.append(
            f"<tr><th scope='row'>{html.escape(label)}</th><td>{value:,}</td><td>{target_text}</td>"
            f"<td>{verdict}</td></tr>"
        )
    return "\n".join(rows)


def throughput_chart(scenarios: list[dict]) -> str:
    bar, gap = 26, 10
    height = len(scenarios) * (bar + gap) + gap
    top = max(s["per_s"] for s in scenarios) or 1
    parts = []
    for index, s in enumerate(scenarios):
        y = gap + index * (bar + gap)
        length = (WIDTH - 2 * MARGIN - 120) * s["per_s"] / top
        unit = "signals/s" if s["kind"] == "signals" else "ticks/s"
        parts.append(
            f"<text x='{MARGIN + 110}' y='{y + bar * 0.7}' text-anchor='end'>{html.escape(s['name'])}</text>"
            f"<rect x='{MARGIN + 120}' y='{y}' width='{length:.1f}' height='{bar}' fill='{COLOURS[index % 6]}'/>"
            f"<text x='{MARGIN + 126 + length:.1f}' y='{y + bar * 0.7}'>{s['per_s']:,.0f} {unit}</text>"
        )
    return (
        f"<svg role='img' aria-label='Throughput per scenario' viewBox='0 0 {WIDTH + 120} {height}' "
        f"width='{WIDTH + 120}' height='{height}'>{''.join(parts)}</svg>"
    )


def latency_chart(scenarios: list[dict], title: str) -> str:
    """Latency (log scale) against percentile, one line per scenario."""
    curves = [(s["name"], sorted((float(q), ms) for q, ms in s["latency_ms"].items())) for s in scenarios]
    values = [ms for _, curve in curves for _, ms in curve if ms > 0]
    low, high = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    high = max(high, low + 1)

    def x(q: float) -> float:
        return MARGIN + (WIDTH - 2 * MARGIN) * q / 100

    def y(ms: float) -> float:
        return HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * (math.log10(max(ms, 10**low)) - low) / (high - low)

    parts = [f"<line x1='{MARGIN}' y1='{HEIGHT - MARGIN}' x2='{WIDTH - MARGIN}' y2='{HEIGHT - MARGIN}' stroke='#888'/>"]
    for exponent in range(low, high + 1):
        ms = 10**exponent
        parts.append(
            f"<line x1='{MARGIN}' y1='{y(ms):.1f}' x2='{WIDTH - MARGIN}' y2='{y(ms):.1f}' stroke='#ddd'/>"
            f"<text x='{MARGIN - 6}' y='{y(ms) + 4:.1f}' text-anchor='end'>{ms:g} ms</text>"
        )
    for q in (0, 25, 50, 75, 90, 100):
        parts.append(f"<text x='{x(q):.1f}' y='{HEIGHT - MARGIN + 18}' text-anchor='middle'>p{q}</text>")
    for index, (name, curve) in enumerate(curves):
        colour = COLOURS[index % 6]
        points = " ".join(f"{x(q):.1f},{y(ms):.1f}" for q, ms in curve)
        parts.append(f"<polyline points='{points}' fill='none' stroke='{colour}' stroke-width='2'/>")
        parts.append(
            f"<text x='{WIDTH - MARGIN + 6}' y='{MARGIN + 16 * index}' fill='{colour}'>{html.escape(name)}</text>"
        )
    return (
        f"<svg role='img' aria-label='{html.escape(title)}' viewBox='0 0 {WIDTH + 90} {HEIGHT}' "
        f"width='{WIDTH + 90}' height='{HEIGHT}'>{''.join(parts)}</svg>"
    )


def percentile_table(scenarios: list[dict]) -> str:
    columns = ("50", "90", "99", "99.9", "100")
    head = "".join(f"<th scope='col'>p{c} ms</th>" for c in columns)
    rows = "".join(
        f"<tr><th scope='row'>{html.escape(s['name'])}</th><td>{s['count']:,}</td><td>{s['per_s']:,.0f}</td>"
        + "".join(f"<td>{s['latency_ms'].get(c, float('nan')):,.1f}</td>" for c in columns)
        + "</tr>"
        for s in scenarios
    )
    return (
        f"<table><thead><tr><th scope='col'>scenario</th><th scope='col'>messages</th><th scope='col'>per s</th>"
        f"{head}</tr></thead><tbody>{rows}</tbody></table>"
    )


def render(results: dict) -> str:
    scenarios = results["scenarios"]
    signals = [s for s in scenarios if s["kind"] == "signals"]
    prices = [s for s in scenarios if s["kind"] == "prices"]
    sections = [
        "<h2>Against the targets</h2><table><thead><tr><th scope='col'>figure</th><th scope='col'>measured</th>"
        f"<th scope='col'>target</th><th scope='col'>verdict</th></tr></thead><tbody>"
        f"{headline_rows(results['summary'])}</tbody></table>",
        f"<h2>Throughput</h2>{throughput_chart(scenarios)}",
        f"<h2>Latency percentiles</h2>{percentile_table(scenarios)}",
    ]
    if signals:
        sections.append(f"<h3>Signal → first event</h3>{latency_chart(signals, 'Signal to event latency')}")
    if prices:
        sections.append(f"<h3>Price tick → CampaignInvalidated</h3>{latency_chart(prices, 'Stop latency')}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>campaign-manager benchmark</title>
<style>body{{font:14px system-ui,sans-serif;margin:2rem;max-width:60rem}}
table{{border-collapse:collapse;margin:.5rem 0}}
th,td{{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}} th[scope=row]{{text-align:left}}
svg text{{font:12px system-ui,sans-serif}}</style></head>
<body><h1>campaign-manager benchmark</h1>
<p>Measured {html.escape(results["measured_at"])} on {results["cpus"]} CPUs by <code>make bench</code>: embedded
PostgreSQL (fsync on) and broker, worker processes and the load generator on the same machine.</p>
{"".join(sections)}
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m campaign_manager.bench_report", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--output", type=Path, default=RESULTS_PATH.with_name("report.html"))
    args = parser.parse_args(argv)
    if not args.results.exists():
        print(f"no {args.results}: run `make bench` first", file=sys.stderr)
        return 1
    args.output.write_text(render(json.loads(args.results.read_text())))
    print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
