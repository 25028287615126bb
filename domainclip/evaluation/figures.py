"""Report figures (matplotlib, Agg): ROC and PR curves with operating points, reliability
diagram, confusion matrix."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from domainclip.core.fileio import whole_file  # noqa: E402


def roc_pr(path: Path, probs: np.ndarray, positives: np.ndarray, class_names: list[str], operating: dict) -> None:
    """Per-class (one-vs-rest) ROC and PR curves with each class's locked operating point;
    ``positives`` is the (N, K) 0/1 matrix of true labels."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for k, name in enumerate(class_names):
        pos = positives[:, k]
        if pos.min() == pos.max():
            continue
        fpr, tpr, _ = roc_curve(pos, probs[:, k])
        prec, rec, _ = precision_recall_curve(pos, probs[:, k])
        line = roc_ax.plot(fpr, tpr, label=name)[0]
        pr_ax.step(rec, prec, where="post", label=name, color=line.get_color())
        op = operating.get(name)
        if op and op["specificity"] == op["specificity"]:
            roc_ax.plot(1 - op["specificity"], op["sensitivity"], "o", color=line.get_color())
            if op["ppv"] == op["ppv"]:
                pr_ax.plot(op["sensitivity"], op["ppv"], "o", color=line.get_color())
    roc_ax.plot([0, 1], [0, 1], ":", color="grey")
    roc_ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (dots: locked operating points)")
    pr_ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall")
    roc_ax.legend(fontsize=8)
    fig.tight_layout()
    with whole_file(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def reliability(path: Path, before: list[dict], after: list[dict], temperature: float) -> None:
    """Accuracy vs confidence per bin, before and after temperature scaling."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for bins, label in ((before, "raw"), (after, f"temperature {temperature:.2f}")):
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label=label, clip_on=False)
    ax.set(xlabel="confidence", ylabel="accuracy", title="Reliability diagram (test)", xlim=(0, 1), ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    with whole_file(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def confusion(path: Path, matrix: list[list[int]], class_names: list[str]) -> None:
    """Confusion matrix with counts (rows: true class, columns: predicted)."""
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="black" if m[i, j] < m.max() / 2 else "white")
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    fig.tight_layout()
    with whole_file(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def decision_curves(path: Path, curves: dict) -> None:
    """Net benefit against threshold probability, one panel per class, with treat-all and treat-none."""
    classes = curves["classes"]
    t = np.asarray(curves["thresholds"])
    fig, axes = plt.subplots(1, len(classes), figsize=(3.6 * len(classes), 3.4), squeeze=False)
    for ax, (name, c) in zip(axes[0], classes.items()):
        model, everyone = np.asarray(c["model"]), np.asarray(c["treat_all"])
        ax.plot(t, model, label="model")
        ax.plot(t, everyone, "--", color="grey", label="treat all")
        ax.axhline(0.0, color="black", lw=0.8, label="treat none")
        top = max(float(model.max()), float(everyone.max()), 0.01)
        ax.set(title=name, xlabel="threshold probability", ylim=(-0.05 * top - 0.01, top * 1.1), xlim=(0, 1))
    axes[0][0].set_ylabel("net benefit")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with whole_file(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
