"""The run report (``report/``: Markdown + PNG figures) and the end-of-run summary table."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _rows(summary: dict) -> list[tuple[str, str, float, float, float]]:
    m = summary["metrics"]
    rows = []
    for split in m["zero_shot_after"]:
        b, a = m["zero_shot_before"][split], m["zero_shot_after"][split]
        rows.append((split, str(a["n"]), b["top1"], a["top1"], a["chance"]))
    return rows


def summary_table(summary: dict) -> str:
    """Markdown table: zero-shot top-1 before training and the adapted model's top-1 after."""
    lines = ["| split | n | zero-shot top-1 before | after | chance |", "|---|---|---|---|---|"]
    lines += [f"| {s} | {n} | {b:.3f} | {a:.3f} | {c:.3f} |" for s, n, b, a, c in _rows(summary)]
    return "\n".join(lines)


def _ci(m: dict, key: str) -> str:
    v, ci = m.get(key), m.get(f"{key}_ci")
    if v is None or v != v:
        return "n/a"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] == ci[0] else "")


def clinical_section(clinical: dict, comparison: dict, class_names: list[str]) -> str:
    """Headline metrics with CIs, per-class table, operating points, calibration, groups, subgroups."""
    img = clinical["image_level"]
    keys = ("top1", "balanced_accuracy", "macro_auroc", "ece", "brier")
    head = "| level | n | " + " | ".join(keys) + " |\n|---|---|" + "---|" * len(keys)
    rows = [f"| image | {clinical['n']} | " + " | ".join(_ci(img, k) for k in keys) + " |"]
    grp = clinical["group_level"]
    rows.append(f"| group ({grp.get('aggregate', '-')}) | {grp.get('n', '-')} | " + " | ".join(_ci(grp, k) for k in keys) + " |"
                if "n" in grp else f"| group | - | {grp['note']} |")
    per_class = "| class | AUROC | AUPRC | threshold | sensitivity | specificity | PPV | NPV |\n|---|---|---|---|---|---|---|---|"
    for c in class_names:
        pc, op = img.get("per_class", {}).get(c, {}), clinical["operating_points"][c]
        per_class += (f"\n| {c} | {pc.get('auroc', float('nan')):.3f} | {pc.get('auprc', float('nan')):.3f} | "
                      f"{op['threshold']:.3f} | {op['sensitivity']:.3f} | {op['specificity']:.3f} | {op['ppv']:.3f} | {op['npv']:.3f} |")
    cmp = "| metric | after - before | 95% CI | p (two-sided) |\n|---|---|---|---|"
    for k, d in comparison.items():
        cmp += f"\n| {k} | {d['difference']:+.3f} | [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] | {d['p_value_two_sided']:.3f} |"
    cal = clinical["calibration"]
    subgroups = ""
    for col, values in clinical["subgroups"].items():
        subgroups += f"\n\n**{col}**\n\n| value | n | top-1 | macro AUROC |\n|---|---|---|---|"
        for v, m in values.items():
            subgroups += f"\n| {v} | {m['n']} | {_ci(m, 'top1')} | {_ci(m, 'macro_auroc')} |"
    return f"""## Clinical evaluation (test split; thresholds and temperature locked on val)

{head}
{chr(10).join(rows)}

95% CIs: bootstrap resampling whole groups (the card's split unit), seeded; group level aggregates each group's images.

### Per class (one-vs-rest), operating points ({', '.join(f'{c}: {t:.3f}' for c, t in clinical['thresholds'].items())})

{per_class}

### Before vs after (paired group bootstrap)

{cmp}

### Calibration

Temperature fitted on val: **{clinical['temperature']:.3f}**. ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f};
Brier {cal['brier_before']:.3f} -> {cal['brier_after']:.3f}.

![ROC and PR](roc_pr.png)
![Reliability](reliability.png)
![Confusion](confusion.png)

### Subgroups
{subgroups or 'No subgroup columns named in the data card (`subgroups:`).'}
"""


def write_figures(report_dir: Path, after_test, clinical: dict, class_names: list[str]) -> None:
    """ROC/PR with operating points, reliability diagram and confusion matrix as PNG."""
    from domainclip.evaluation import figures

    if clinical.get("multi_label"):
        from domainclip.evaluation.multilabel import probabilities

        probs = probabilities(after_test.logits, clinical["temperature"], clinical["bias"]).numpy()
        positives = after_test.targets.numpy().astype(int)
    else:
        probs = (after_test.logits / clinical["temperature"]).softmax(-1).numpy()
        positives = np.eye(len(class_names), dtype=int)[after_test.targets.numpy()]
    figures.roc_pr(report_dir / "roc_pr.png", probs, positives, class_names, clinical["operating_points"])
    cal = clinical["calibration"]
    figures.reliability(report_dir / "reliability.png", cal["reliability_before"], cal["reliability_after"],
                        clinical["temperature"])
    if "confusion_matrix" in clinical["image_level"]:
        figures.confusion(report_dir / "confusion.png", clinical["image_level"]["confusion_matrix"], class_names)


def write_report(report_dir: Path, summary: dict, cfg, data=None, after_test=None) -> None:
    """``report/summary.md`` (and figures): card, split level, counts, metrics, timings."""
    report_dir.mkdir(parents=True, exist_ok=True)
    counts = "\n".join(f"- {s}: {c}" for s, c in summary["counts"].items())
    timings = "\n".join(f"- {k}: {v:.1f}" for k, v in summary["timings"].items())
    skipped = summary.get("skipped", {"count": 0, "files": []})
    counts += f"\n\nSkipped (unreadable, listed in quarantine.jsonl): {skipped['count']}"
    m = summary["metrics"]
    clinical = ""
    if "clinical" in m and data is not None:
        clinical = clinical_section(m["clinical"], m["before_vs_after"], data.class_names)
        if after_test is not None:
            write_figures(report_dir, after_test, m["clinical"], data.class_names)
    digest = f"Data card digest (sha256): `{data.digest}`\n\n" if data is not None else ""
    if "retrieval" in m:
        r = m["retrieval"]["test"]
        clinical += ("\n### Retrieval (test; a match = same label set)\n\n| direction | R@1 | R@5 | R@10 | mean rank | median rank |"
                     "\n|---|---|---|---|---|---|" + "".join(
                         f"\n| {d} | {v['R@1']:.3f} | {v['R@5']:.3f} | {v['R@10']:.3f} | {v['mean_rank']:.1f} | {v['median_rank']:.0f} |"
                         for d, v in r.items()) + "\n")
    (report_dir / "summary.md").write_text(
        f"# domainclip run: {summary['card']}\n\nTower `{cfg.tower.name}`, method `{cfg.method.name}`, "
        f"loss `{cfg.loss.name}`, split level **{summary['split_level']}** (no group crosses splits).\n\n{digest}"
        f"## Top-1 per split\n\n{summary_table(summary)}\n\n{clinical}\n## Images per class per split\n\n{counts}\n\n"
        f"## Timings (s)\n\n{timings}\n{flags_section(summary)}"
    )


def warning_lines(summary: dict) -> list[str]:
    """Run warnings, evaluation flags, metrics left undefined (with why) and a refused bundle."""
    lines = [*summary.get("warnings", []), *summary["metrics"].get("clinical", {}).get("flags", [])]
    for split, m in summary["metrics"].get("zero_shot_after", {}).items():
        lines += [f"{split}: {metric} not reported: {why}" for metric, why in m.get("undefined", {}).items()]
    if "export" in summary:
        lines.append(f"bundle refused: {summary['export']['refused']}")
    return lines


def flags_section(summary: dict) -> str:
    """The report's Warnings section (the same lines the summary prints)."""
    lines = warning_lines(summary)
    return "\n## Warnings\n\n" + "".join(f"- {line}\n" for line in lines) if lines else ""


def print_summary(summary: dict) -> None:
    """Print the short summary table to stdout."""
    print(f"\ndomainclip summary: {summary['card']} (split level {summary['split_level']})")
    print(summary_table(summary))
    clinical = summary["metrics"].get("clinical")
    if clinical:
        img = clinical["image_level"]
        print(f"test, after temperature scaling: macro AUROC {_ci(img, 'macro_auroc')}, balanced accuracy {_ci(img, 'balanced_accuracy')}, "
              f"ECE {clinical['calibration']['ece_before']:.3f} -> {clinical['calibration']['ece_after']:.3f} "
              f"(temperature {clinical['temperature']:.2f})")
    skipped = summary.get("skipped", {}).get("count", 0)
    if skipped:
        print(f"skipped {skipped} unreadable file(s); see quarantine.jsonl")
    for line in warning_lines(summary):
        print(f"warning: {line}")
    if "total_s" in summary["timings"]:
        print(f"total {summary['timings']['total_s']:.1f} s\n")


