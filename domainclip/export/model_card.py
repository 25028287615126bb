"""MODEL_CARD.md from bundle metadata, with sections mapped to CLAIM and TRIPOD+AI items."""
from __future__ import annotations


def _fmt(m: dict, key: str) -> str:
    value = m.get(key)
    if value is None or value != value:  # missing or NaN
        return "n/a"
    ci = m.get(f"{key}_ci")
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _metric_rows(metrics: dict) -> str:
    rows = ["| evaluation | split | n | top-1 | balanced acc. | macro AUROC |", "|---|---|---|---|---|---|"]
    for name, splits in metrics.items():
        if not isinstance(splits, dict) or name in ("external", "sites"):  # sites have their own table
            continue
        for split, m in splits.items():
            if isinstance(m, dict) and "n" in m:
                rows.append(f"| {name} | {split} | {m['n']} | {_fmt(m, 'top1')} | {_fmt(m, 'balanced_accuracy')} "
                            f"| {_fmt(m, 'macro_auroc')} |")
    return "\n".join(rows)


def _counts(counts: dict) -> str:
    classes = list(next(iter(counts.values())))
    head = "| split | " + " | ".join(classes) + " |\n|---|" + "---|" * len(classes)
    return head + "".join(f"\n| {s} | " + " | ".join(str(c[k]) for k in classes) + " |" for s, c in counts.items())


def _provenance(captions: dict) -> str:
    line = f"Template set `{captions['template_set']}`; {captions['count']} distinct captions"
    llm = captions.get("llm")
    if llm:
        line += (f"; LLM expansion with `{llm['model']}` (prompt hash `{llm['prompt_hash']}`): "
                 f"{llm['accepted']} accepted, rejected {llm['rejected']}")
    return line + (". Reviewed and approved by a clinician." if captions.get("reviewed") else ". Not clinician-reviewed.")


def _sites(metrics: dict) -> str:
    sites = metrics.get("sites")
    if not sites:
        return "No external site was evaluated (`eval.external_cards`); external validation is still needed."
    rows = ["| site | n | top-1 | macro AUROC | conformal coverage (LAC) |", "|---|---|---|---|---|"]
    for name, row in sites["sites"].items():
        cover = row.get("conformal")
        rows.append(f"| {name} | {row['n']} | {_fmt(row, 'top1')} | {_fmt(row, 'macro_auroc')} | "
                    f"{_fmt(cover, 'coverage') if cover else 'n/a'} |")
    worse = sites.get("worse") or []
    warning = ("\n\n**Warning: the model is worse on an external site than on the internal test split, beyond the "
               "CI of the difference:** " + "; ".join(worse) + ". Validate locally before any use there.") if worse else ""
    return "\n".join(rows) + warning


def _utility(clinical: dict) -> str:
    lines = []
    conformal = clinical.get("conformal")
    if conformal:
        for m in ("lac", "aps"):
            r = conformal[m]
            lines.append(f"- Conformal sets ({m.upper()}, alpha {conformal['alpha']}, calibrated on "
                         f"{conformal['calibration'].get('unit', 'val')}): test coverage {_fmt(r, 'coverage')}, "
                         f"mean set size {r['mean_set_size']:.2f}")
    for c, r in (clinical.get("recalibration") or {}).items():
        if r.get("slope") is not None:
            lines.append(f"- Calibration slope / intercept, {c}: {_fmt(r, 'slope')} / {_fmt(r, 'intercept')}")
    for c, d in ((clinical.get("decision_curves") or {}).get("classes") or {}).items():
        r = d["useful_range"]
        lines.append(f"- Net benefit above treat-all and treat-none, {c}: "
                     + (f"thresholds {r[0]:.2f} to {r[1]:.2f}" if r else "at no threshold"))
    return "\n".join(lines) or "Not computed for this run."


def _not_evaluated(metrics: dict) -> str:
    """Classes the card had too few groups to evaluate on a split (a line each), or nothing."""
    lines = [f"- Class `{c}`: {why}; its metrics there are NaN and macro metrics cover the classes evaluated.\n"
             for reasons in (metrics.get("not_evaluated") or {}).values() for c, why in reasons.items()]
    unfitted = (metrics.get("clinical") or {}).get("thresholds_not_fitted") or {}
    lines += [f"- Class `{c}`: operating threshold not fitted on val ({why}).\n" for c, why in unfitted.items()]
    return "".join(lines) + ("\n" if lines else "")


def render_model_card(meta: dict) -> str:
    """The bundle's model card. Every section maps to reporting-guideline items."""
    data, tower, method = meta["data_card"], meta["tower"], meta["method"]
    thresholds = meta.get("thresholds") or {}
    subgroups = meta.get("subgroups") or {}
    return f"""# Model card: `{method['name']}` adaptation of `{tower['name']}` for `{data['name']}`

## Model details (CLAIM 1-2, 22-24; TRIPOD+AI 1, 12)
- Base tower: `{tower['name']}`, weights digest `{tower['weights_digest']}`
- Method: `{method['name']}` ({method['config']}); loss `{meta['loss'].get('name', 'n/a')}`
- Preprocessing: reader `{meta['preprocessing']['reader']}` {meta['preprocessing']['reader_options']}, size {meta['preprocessing']['size']}, mean {meta['preprocessing']['mean']}, std {meta['preprocessing']['std']}
- Software: {meta['versions']}

## Intended use (CLAIM 3; TRIPOD+AI 3c)
Research evaluation of zero-shot classification of **{data['modality']}** images into:
{', '.join(meta['classes'])}. Outputs are probabilities for decision support research only.

## Out-of-scope uses
Clinical decisions without local validation; other modalities, body parts, scanners, stains or
sensors than the data card describes; populations the evaluation data does not represent.

## Data (CLAIM 7-13; TRIPOD+AI 5-8)
- Data card `{data['name']}`, sha256 `{data['digest']}`, license: {data['license']}
- Splits are disjoint at the **{data['split_level']}** level.
- Values the card's author reviewed as not identifying (`phi.allow`, exempt from the PHI audit): {meta.get('phi_allowed') or 'none'}

{_counts(data['counts'])}

## Captions (provenance)
{_provenance(meta['captions'])}

## Performance (CLAIM 37-39; TRIPOD+AI 23)
{_metric_rows(meta['metrics'])}

### Sites (TRIPOD+AI 23a; external validation)
{_sites(meta['metrics'])}

### Calibration slope, clinical utility (net benefit) and prediction sets (TRIPOD+AI 23)
{_utility(meta['metrics'].get('clinical', {}))}

## Calibration and operating points (TRIPOD+AI 12e)
- Temperature: {meta.get('temperature', 1.0)}
- Operating points: {thresholds or 'none locked'}

## Subgroups (CLAIM 40; TRIPOD+AI 23b)
{subgroups or 'No subgroup columns were named in the data card.'}

## Known limitations (CLAIM 41; TRIPOD+AI 25)
{_not_evaluated(meta['metrics'])}Performance was estimated on the card's held-out split{' and the external sites above' if meta['metrics'].get('sites') else ' only; external validation is needed'}.
Captions derive from class labels, so the text side encodes the label set, not free-text reports.
Demo data cards contain synthetic images and say so.

## How to reproduce (CLAIM 43; TRIPOD+AI 18)
The resolved config is `reproduce.yaml` and the data card `data_card.yaml` in this bundle
(BUNDLE_DIR). From a working directory outside the bundle (the rerun writes `outputs/` there; it
never writes inside the bundle), with the data card's files in place:
```
{meta['reproduce']}
```
Load without training code: `domainclip.load_bundle(path).predict(images)`.
"""
