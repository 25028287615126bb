"""Markdown report and the end-of-run summary table."""
from __future__ import annotations

from pathlib import Path


def _rows(summary: dict) -> list[tuple[str, str, float, float, float]]:
    m = summary["metrics"]
    rows = []
    for split in m["zero_shot_after"]:
        b, a = m["zero_shot_before"][split], m["zero_shot_after"][split]
        rows.append((split, str(a["n"]), b["top1"], a["top1"], a["chance"]))
    return rows


def summary_table(summary: dict) -> str:
    """Markdown table: zero-shot top-1 before and after training, per split."""
    lines = ["| split | n | zero-shot top-1 before | after | chance |", "|---|---|---|---|---|"]
    lines += [f"| {s} | {n} | {b:.3f} | {a:.3f} | {c:.3f} |" for s, n, b, a, c in _rows(summary)]
    return "\n".join(lines)


def write_report(report_dir: Path, summary: dict, cfg) -> None:
    """``report/summary.md``: card, split level, counts, metrics and timings."""
    report_dir.mkdir(parents=True, exist_ok=True)
    counts = "\n".join(f"- {s}: {c}" for s, c in summary["counts"].items())
    timings = "\n".join(f"- {k}: {v:.1f}" for k, v in summary["timings"].items())
    skipped = summary.get("skipped", {"count": 0, "files": []})
    counts += f"\n\nSkipped (unreadable, listed in quarantine.jsonl): {skipped['count']}"
    (report_dir / "summary.md").write_text(
        f"# domainclip run: {summary['card']}\n\nTower `{cfg.tower.name}`, method `{cfg.method.name}`, "
        f"loss `{cfg.loss.name}`, split level **{summary['split_level']}**.\n\n## Zero-shot classification\n\n"
        f"{summary_table(summary)}\n\n## Images per class per split\n\n{counts}\n\n## Timings (s)\n\n{timings}\n"
    )


def print_summary(summary: dict) -> None:
    """Print the short summary table to stdout."""
    print(f"\ndomainclip summary: {summary['card']} (split level {summary['split_level']})")
    print(summary_table(summary))
    skipped = summary.get("skipped", {}).get("count", 0)
    if skipped:
        print(f"skipped {skipped} unreadable file(s); see quarantine.jsonl")
    print(f"total {summary['timings']['total_s']:.1f} s\n")
