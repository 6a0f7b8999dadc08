"""The bench's chart (PNG: seconds against size per stage, log-log, with each stage's fitted slope)
and a self-contained HTML page (the chart inlined, the ladder and the fits as tables, the machine)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from resolver.bench.capacity import INGEST, PowerLaw, pipeline_stages, stage_driver


def write_chart(bench: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    combos = sorted({(r["backend"], r["engine"]) for r in bench["rows"]})
    fig, axes = plt.subplots(1, len(combos), figsize=(10 * len(combos), 5.5), squeeze=False)
    for ax, (backend, engine) in zip(axes[0], combos):
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
        rows = sorted((r for r in bench["rows"] if r["backend"] == backend and r["engine"] == engine),
                      key=lambda r: r["people"])
        fits = {f["measure"]: PowerLaw.from_dict(f) for f in bench["fits"]
                if f["backend"] == backend and f["engine"] == engine}
        stages = [s for s in pipeline_stages(rows[0]["stages"]) if s in fits]
        for stage in [*stages, "wall_s"]:
            if stage == "wall_s":
                x = np.array([r["records"]["median"] for r in rows])
                y = np.array([r["wall_s"]["median"] for r in rows])
                low = np.array([r["wall_s"]["min"] for r in rows])
                high = np.array([r["wall_s"]["max"] for r in rows])
                label, style = "total (wall)", "k-"
            else:  # a stage some runs do not have (no probabilistic links at all, say) is left out there
                having = [r for r in rows if r["stages"].get(stage)]
                x = np.array([stage_driver(stage, r) for r in having])
                y = np.array([r["stages"][stage]["median"] for r in having])
                low = np.array([r["stages"][stage]["min"] for r in having])
                high = np.array([r["stages"][stage]["max"] for r in having])
                label, style = stage.replace(" (read + normalize, wall)", ""), "o--"
            law = fits.get(stage)
            if law is not None:
                label += f" (slope {law.b:.2f})"
            errors = np.vstack([np.maximum(y - low, 0), np.maximum(high - y, 0)])
            ax.errorbar(x, np.maximum(y, 1e-4), yerr=errors, fmt=style, capsize=3, label=label, markersize=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("CRM records (ingest: input rows)")
        ax.set_ylabel("seconds (median; bars: min to max)")
        ax.set_title(f"{backend} backend, {engine} engine")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def ladder_table(bench: dict) -> tuple[list[str], list[list]]:
    header = ["people", "backend", "engine", "records", "events", "wall s (median [min, max])", "records/s",
              "events/s", "pairs/s", "pairs per record", "host peak MiB", "GPU peak MiB", "cluster F1"]
    rows = []
    for r in bench["rows"]:
        wall = r["wall_s"]
        rows.append([f"{r['people']:,}", r["backend"], r["engine"], f"{r['records']['median']:,.0f}",
                     f"{r['events']['median']:,.0f}", f"{wall['median']:.1f} [{wall['min']:.1f}, {wall['max']:.1f}]",
                     f"{r['records_per_s']['median']:,.0f}", f"{r['events_per_s']['median']:,.0f}",
                     f"{r['pairs_per_s']['median']:,.0f}", f"{r['pairs_per_record']['median']:.2f}",
                     f"{r['host_peak_mib']['median']:,.0f}",
                     f"{r['gpu_peak_mib']['median']:,.0f}" if r.get("gpu_peak_mib") else "-",
                     f"{r['cluster_f1']['median']:.4f}" if r.get("cluster_f1") else "-"])
    return header, rows


def markdown_ladder(bench: dict) -> str:
    header, rows = ladder_table(bench)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_html(bench: dict, chart: Path, path: Path) -> None:
    image = base64.b64encode(chart.read_bytes()).decode()
    ladder = _table(*ladder_table(bench))
    fits = _table(["backend", "engine", "measure", "slope", "a", "residual sd (log)", "points", "largest size"],
                  [[f["backend"], f["engine"], f["measure"], f"{f['slope']:.3f}", f"{f['a']:.3g}",
                    f"{f['residual_sd_log']:.3f}", f["points"], f"{f['largest_size']:,.0f}"] for f in bench["fits"]])
    machine = html.escape(json.dumps(bench["machine"], indent=2))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>resolver bench</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;margin:1em 0;
font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}
img{{max-width:100%}}pre{{background:#f7f7f7;padding:1em}}</style></head>
<body><h1>resolver bench</h1>
<p>{html.escape(bench['created'])}; sizes {bench['settings']['sizes']}, {bench['settings']['repeat']} runs each
(median, min and max). Ingest is plotted against input rows ({html.escape(INGEST)}), the other stages against CRM
records.</p>
<img alt="seconds against size per stage, log-log, with fitted slopes" src="data:image/png;base64,{image}">
<h2>Ladder</h2>{ladder}<h2>Fitted power laws (seconds = a &middot; size<sup>slope</sup>)</h2>{fits}
<h2>Machine</h2><pre>{machine}</pre></body></html>
"""
    path.write_text(page, encoding="utf-8")


def write_bench(bench: dict, out_dir: Path) -> dict[str, Path]:
    """bench.json, bench.png and bench.html in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "png": out_dir / "bench.png", "html": out_dir / "bench.html"}
    paths["json"].write_text(json.dumps(bench, indent=2), encoding="utf-8")
    write_chart(bench, paths["png"])
    write_html(bench, paths["png"], paths["html"])
    return paths
