"""The run report (``report/``: Markdown + PNG figures) and the end-of-run summary table."""
from __future__ import annotations

from pathlib import Path

from domainclip.core.fileio import atomic_write_text
from domainclip.evaluation import figures
from domainclip.evaluation.evaluators import evaluator_of
from domainclip.evaluation.gallery import gallery_section
from domainclip.evaluation.scores import METRICS
from domainclip.evaluation.slide_gallery import slide_gallery_section


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
    keys = tuple(dict.fromkeys([*METRICS["single_label"], *METRICS["multi_label"]]))  # every registered metric
    head = "| level | n | " + " | ".join(keys) + " |\n|---|---|" + "---|" * len(keys)
    rows = [f"| image | {clinical['n']} | " + " | ".join(_ci(img, k) for k in keys) + " |"]
    grp = clinical["group_level"]
    rule = grp.get("aggregate", "-") if grp.get("group_label", "unanimous") == "unanimous" else grp["group_label"]
    rows.append(f"| group ({rule}) | {grp.get('n', '-')} | " + " | ".join(_ci(grp, k) for k in keys) + " |"
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

    evaluator = evaluator_of(clinical)
    probs = evaluator.probabilities(after_test.logits, clinical).numpy()
    positives = evaluator.indicators(after_test.targets, len(class_names))
    figures.roc_pr(report_dir / "roc_pr.png", probs, positives, class_names, clinical["operating_points"])
    cal = clinical["calibration"]
    figures.reliability(report_dir / "reliability.png", cal["reliability_before"], cal["reliability_after"],
                        clinical["temperature"])
    if clinical.get("decision_curves"):
        figures.decision_curves(report_dir / "decision_curves.png", clinical["decision_curves"])
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
        clinical += utility_section(m["clinical"]) + sites_section(m.get("sites"))
        if after_test is not None:
            write_figures(report_dir, after_test, m["clinical"], data.class_names)
        cases = summary.get("gallery", [])
        slides = bool(cases) and cases[0]["file"].startswith("slides/")
        clinical += slide_gallery_section(cases) if slides else gallery_section(cases)
    digest = f"Data card digest (sha256): `{data.digest}`\n\n" if data is not None else ""
    if "retrieval" in m:
        r = m["retrieval"]["test"]
        clinical += ("\n### Retrieval (test; a match = same label set)\n\n| direction | R@1 | R@5 | R@10 | mean rank | median rank |"
                     "\n|---|---|---|---|---|---|" + "".join(
                         f"\n| {d} | {v['R@1']:.3f} | {v['R@5']:.3f} | {v['R@10']:.3f} | {v['mean_rank']:.1f} | {v['median_rank']:.0f} |"
                         for d, v in r.items()) + "\n")
    atomic_write_text(report_dir / "summary.md",
        f"# domainclip run: {summary['card']}\n\nTower `{cfg.tower.name}`, method `{cfg.method.name}`, "
        f"loss `{cfg.loss.name}`, split level **{summary['split_level']}** (no group crosses splits).\n\n{digest}"
        f"## Top-1 per split\n\n{summary_table(summary)}\n\n{clinical}\n## Images per class per split\n\n{counts}\n\n"
        f"## Timings (s)\n\n{timings}\n{flags_section(summary)}"
    )


def _pm(d: dict, key: str) -> str:
    v, ci = d.get(key), d.get(f"{key}_ci")
    return "n/a" if v is None else f"{v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def utility_section(clinical: dict) -> str:
    """Calibration slope and intercept, decision curves and conformal prediction sets."""
    out = ("\n### Calibration slope and intercept (logistic recalibration, one-vs-rest; ideal 1 and 0)\n\n"
           "| class | slope [95% CI] | intercept [95% CI] |\n|---|---|---|")
    for c, r in (clinical.get("recalibration") or {}).items():
        out += f"\n| {c} | {_pm(r, 'slope')} | {_pm(r, 'intercept')} |" + (f" {r['note']}" if "note" in r else "")
    if clinical.get("decision_curves"):
        out += ("\n\n### Decision curves (net benefit; Vickers and Elkin 2006)\n\n![Decision curves](decision_curves.png)\n\n"
                "| class | threshold range where the model beats treat-all and treat-none (first contiguous run) |\n|---|---|")
        for c, d in clinical["decision_curves"]["classes"].items():
            r = d["useful_range"]
            out += f"\n| {c} | {f'{r[0]:.2f} to {r[1]:.2f}' if r else 'none'} |"
    conformal = clinical.get("conformal")
    if conformal:
        cal, spread = conformal["calibration"], conformal["calibration"].get("coverage_given_calibration_90")
        out += (f"\n\n### Conformal prediction sets (split conformal, alpha {conformal['alpha']}: coverage >= "
                f"{1 - conformal['alpha']:.2f} guaranteed)\n\nCalibrated on {cal['split']}: {cal.get('n_used', '-')} of "
                f"{cal.get('n_images', '-')} images, unit: {cal.get('unit', '-')}.{' ' + conformal['note'] if 'note' in conformal else ''}")
        if spread:
            out += (f" With this many calibration units, the coverage of one calibration draw lies in [{spread[0]:.3f}, "
                    f"{spread[1]:.3f}] with 90% probability (its Beta distribution); the guarantee is the average over draws.")
        out += "\n\n| score | threshold | test coverage [95% CI] | mean set size | empty sets | coverage per class |\n|---|---|---|---|---|---|"
        for m in ("lac", "aps"):
            r = conformal[m]
            per = ", ".join(f"{c}: {v:.2f}" for c, v in r["per_class"].items())
            out += f"\n| {m.upper()} | {r['threshold']:.3f} | {_ci(r, 'coverage')} | {r['mean_set_size']:.2f} | {r['empty_sets']} | {per} |"
    return out + "\n"


def sites_section(sites: dict | None) -> str:
    """Sites side by side and each external site's difference from the development test split."""
    if not sites:
        return ""
    out = ("\n## Sites (the locked model: temperature, thresholds and conformal sets from the development site's val)\n\n"
           "| site | n | top-1 | balanced accuracy | macro AUROC | conformal coverage (LAC) | mean set size |\n|---|---|---|---|---|---|---|")
    for name, row in sites["sites"].items():
        cover = row.get("conformal") or {}
        out += (f"\n| {name} | {row['n']} | {_ci(row, 'top1')} | {_ci(row, 'balanced_accuracy')} | {_ci(row, 'macro_auroc')} "
                f"| {_ci(cover, 'coverage') if cover else 'n/a'} | {cover.get('mean_set_size', float('nan')):.2f} |")
    if sites.get("differences"):
        out += "\n\nExternal minus development test (bootstrap resampling each site's groups independently):\n\n"
        out += "| site | metric | difference | 95% CI | p (two-sided) |\n|---|---|---|---|---|"
        for name, diffs in sites["differences"].items():
            for k, d in diffs.items():
                out += f"\n| {name} | {k} | {d['difference']:+.3f} | [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] | {d['p_value_two_sided']:.3f} |"
    return out + "\n"


def conformal_lines(clinical: dict, where: str = "test", indent: str = "") -> list[str]:
    """One line per conformal score: coverage on ``where`` with its CI and the mean set size."""
    conformal = clinical.get("conformal") or {}
    return [f"{indent}conformal sets ({m.upper()}, alpha {conformal['alpha']}): {where} coverage {_ci(conformal[m], 'coverage')}, "
            f"mean set size {conformal[m]['mean_set_size']:.2f}" for m in ("lac", "aps") if m in conformal]


def site_lines(sites: dict | None) -> list[str]:
    """Each site's top-1 and macro AUROC with CIs and LAC coverage, then each difference."""
    if not sites:
        return []
    lines = []
    for name, row in sites["sites"].items():
        cover = row.get("conformal")
        lines.append(f"site {name}: n={row['n']}, top-1 {_ci(row, 'top1')}, macro AUROC {_ci(row, 'macro_auroc')}"
                     + (f", conformal coverage {_ci(cover, 'coverage')}" if cover else ""))
    for name, diffs in sites.get("differences", {}).items():
        d = diffs["top1"]
        lines.append(f"site {name} minus development test: top-1 {d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]")
    return lines


def warning_lines(summary: dict) -> list[str]:
    """Run warnings, evaluation flags, metrics left undefined (with why) and a refused bundle."""
    lines = [*summary.get("warnings", []), *summary["metrics"].get("clinical", {}).get("flags", [])]
    unfitted = summary["metrics"].get("clinical", {}).get("thresholds_not_fitted", {})
    lines += [f"class '{c}': operating threshold not fitted on val ({why})" for c, why in unfitted.items()]
    lines += [f"external site worse beyond its CI: {w}" for w in (summary["metrics"].get("sites") or {}).get("worse", [])]
    conformal = summary["metrics"].get("clinical", {}).get("conformal") or {}
    if "note" in conformal:
        lines.append(f"conformal sets: {conformal['note']}")
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
        for line in [*conformal_lines(clinical), *site_lines(summary["metrics"].get("sites"))]:
            print(line)
    skipped = summary.get("skipped", {}).get("count", 0)
    if skipped:
        print(f"skipped {skipped} unreadable file(s); see quarantine.jsonl")
    for line in warning_lines(summary):
        print(f"warning: {line}")
    if "total_s" in summary["timings"]:
        print(f"total {summary['timings']['total_s']:.1f} s\n")


