"""Linear probe: logistic regression on frozen, L2-normalised image features, C swept on val."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from domainclip.errors import ConfigError
from domainclip.fileio import load_safetensors as load_file
from domainclip.methods.base import METHODS, Method, freeze

PROBE_FILE = "linear_probe.safetensors"


def split_features(tower, loader) -> tuple[np.ndarray, np.ndarray]:
    """Normalised backbone features and labels of every batch of ``loader``."""
    feats, labels = [], []
    with torch.inference_mode():
        for batch in loader:
            f = batch["features"] if "features" in batch else tower.image_features(batch["pixels"])
            feats.append(F.normalize(f.float(), dim=-1))
            labels.append(batch["label"])
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


@METHODS.register("linear_probe")
class LinearProbe(Method):
    """Fits scikit-learn's LogisticRegression for each C in ``Cs``, keeps the best on val."""

    name = "linear_probe"
    objective = "none"
    export_files = (PROBE_FILE,)

    def __init__(self, Cs=(0.01, 0.1, 1.0, 10.0, 100.0, 1000.0), max_iter: int = 2000, **kwargs):
        super().__init__(**{**kwargs, "train_heads": False})
        self.Cs, self.max_iter = [float(c) for c in Cs], int(max_iter)

    def prepare(self, tower, class_names) -> None:
        freeze(tower)
        tower.probe = None

    def logits(self, tower, batch, prompts):
        if getattr(tower, "probe", None) is None:  # before fitting: the zero-shot baseline
            return super().logits(tower, batch, prompts)
        feats = batch["features"] if "features" in batch else tower.image_features(batch["pixels"])
        return tower.probe(F.normalize(feats.float(), dim=-1))

    def fit(self, task, datamodule, make_trainer) -> dict:
        from sklearn.linear_model import LogisticRegression

        tower = task.tower.eval()
        xtr, ytr = split_features(tower, datamodule._loader("train", shuffle=False))
        xva, yva = split_features(tower, datamodule._loader("val", shuffle=False))
        if ytr.ndim != 1:
            raise ConfigError("method=linear_probe supports single-label cards")
        scores = {}
        for c in self.Cs:
            clf = LogisticRegression(C=c, max_iter=self.max_iter).fit(xtr, ytr)
            scores[c] = float((clf.predict(xva) == yva).mean())
        best = max(self.Cs, key=lambda c: (scores[c], -c))
        clf = LogisticRegression(C=best, max_iter=self.max_iter).fit(xtr, ytr)
        tower.probe = self._linear(clf, len(task.class_names))
        return {"C": best, "val_top1_by_C": {str(c): s for c, s in scores.items()}}

    @staticmethod
    def _linear(clf, num_classes: int) -> nn.Linear:
        weight, bias = np.zeros((num_classes, clf.coef_.shape[1])), np.full(num_classes, -1e4)
        if clf.coef_.shape[0] == 1:  # binary: sklearn keeps one row for the positive class
            weight[clf.classes_[1]], bias[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
            bias[clf.classes_[0]] = 0.0
        else:
            weight[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
        layer = nn.Linear(weight.shape[1], num_classes)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(weight))
            layer.bias.copy_(torch.from_numpy(bias))
        return layer.requires_grad_(False)

    def export(self, tower, out_dir: Path) -> None:
        state = {k: v.detach().contiguous() for k, v in tower.probe.state_dict().items()}
        save_file(state, str(Path(out_dir) / PROBE_FILE), metadata={"format": "pt"})

    def load(self, tower, bundle_dir: Path, class_names) -> None:
        state = load_file(str(Path(bundle_dir) / PROBE_FILE))
        freeze(tower)
        tower.probe = nn.Linear(state["weight"].shape[1], state["weight"].shape[0]).requires_grad_(False)
        tower.probe.load_state_dict(state)
