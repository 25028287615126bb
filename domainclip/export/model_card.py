"""MODEL_CARD.md from bundle metadata."""
from __future__ import annotations


def _metric_rows(metrics: dict) -> str:
    rows = ["| evaluation | split | n | top-1 | balanced acc. | macro AUROC |", "|---|---|---|---|---|---|"]
    for name, splits in metrics.items():
        for split, m in splits.items():
            auroc = f"{m['macro_auroc']:.3f}" if "macro_auroc" in m else "n/a"
            rows.append(f"| {name} | {split} | {m['n']} | {m['top1']:.3f} | {m['balanced_accuracy']:.3f} | {auroc} |")
    return "\n".join(rows)


def render_model_card(meta: dict) -> str:
    """A Markdown model card: use, base tower, method, data, metrics, limits, reproduction."""
    data = meta["data_card"]
    counts = "\n".join(f"- {split}: {c}" for split, c in data["counts"].items())
    return f"""# Model card: {meta['method']['name']} adapter for {data['name']}

## Intended use
Research evaluation of a CLIP-style model adapted to **{data['modality']}** images for the classes
{', '.join(meta['classes'])}. Not for clinical decisions without local validation.

## Out-of-scope uses
Images of other modalities, body parts or acquisition settings than the data card describes;
any use on a population the validation data does not represent.

## Base tower and method
- Tower: `{meta['tower']['name']}` (weights digest `{meta['tower']['weights_digest'][:16]}…`)
- Method: `{meta['method']['name']}`; loss `{meta.get('loss', {}).get('name', 'n/a')}`
- Preprocessing: {meta['preprocessing']}

## Data
- Data card: `{data['name']}` (sha256 `{data['digest'][:16]}…`), license: {data.get('license') or 'unspecified'}
- Split level: **{data['split_level']}**
- Images per class per split:
{counts}

## Captions
Template set `{meta['captions']['template_set']}`, {meta['captions']['count']} captions (source: templates).

## Metrics
{_metric_rows(meta['metrics'])}

## Known limitations
Point estimates without confidence intervals; no calibration step; demo data is synthetic.

## How to reproduce
```
{meta['reproduce']}
```
"""
