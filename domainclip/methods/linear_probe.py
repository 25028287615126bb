"""Linear probe: logistic regression on frozen, L2-normalised image features, C swept on val.

The method is the probe's scoring; the fit itself is the pipeline's closed-form objective
(``domainclip.pipeline.objectives``), which calls :meth:`LinearProbe.fit_probe`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from domainclip.core.errors import ConfigError
from domainclip.core.fileio import load_safetensors as load_file
from domainclip.methods.base import METHODS, Method, freeze

PROBE_FILE = "linear_probe.safetensors"


class Probe(nn.Module):
    """A frozen linear layer on normalised backbone features; empty until fitted (the model then
    scores zero-shot)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.zeros(0, 0))
        self.register_buffer("bias", torch.zeros(0))

    @property
    def fitted(self) -> bool:
        return self.weight.numel() > 0

    def set(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Install fitted coefficients (K, F) and intercepts (K,)."""
        self.weight = weight.to(self.bias.device, torch.float32).contiguous()
        self.bias = bias.to(self.bias.device, torch.float32).contiguous()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(features.float(), dim=-1), self.weight, self.bias)


def sklearn_to_linear(clf, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fitted LogisticRegression as (K, F) weights and (K,) biases over all ``num_classes``
    (classes absent from training get a very low score)."""
    weight, bias = np.zeros((num_classes, clf.coef_.shape[1])), np.full(num_classes, -1e4)
    if clf.coef_.shape[0] == 1:  # binary: sklearn keeps one row for the positive class
        weight[clf.classes_[1]], bias[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
        bias[clf.classes_[0]] = 0.0
    else:
        weight[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    return torch.from_numpy(weight), torch.from_numpy(bias)


@METHODS.register("linear_probe")
class LinearProbe(Method):
    """scikit-learn's LogisticRegression for each C in ``Cs``, the best on val kept."""

    name = "linear_probe"
    training = "closed_form"
    export_files = (PROBE_FILE,)

    def __init__(self, Cs=(0.01, 0.1, 1.0, 10.0, 100.0, 1000.0), max_iter: int = 2000, **kwargs):
        super().__init__(**{**kwargs, "train_heads": False})
        self.Cs, self.max_iter = [float(c) for c in Cs], int(max_iter)

    @property
    def static_classes(self) -> bool:
        return False  # the probe scores images itself

    def prepare(self, model) -> dict[str, nn.Module]:
        freeze(model)
        return {"probe": Probe()}

    def logits(self, model, batch, prompts, class_emb=None):
        probe = model.adapters["probe"]
        if not probe.fitted:  # before fitting: the zero-shot baseline
            return super().logits(model, batch, prompts, class_emb)
        return probe(batch["features"] if "features" in batch else model.image_features(batch["pixels"]))

    def location_scores(self, model, features, prompts, class_emb=None):
        """The probe's logit at each location (it is linear in the normalised features)."""
        probe = model.adapters["probe"]
        if not probe.fitted:
            return super().location_scores(model, features, prompts, class_emb)
        return probe(features).permute(0, 3, 1, 2)

    def location_logits(self, model, features, prompts, class_emb=None):
        """The probe's logit at each location: its ``location_scores`` are logits already."""
        if not model.adapters["probe"].fitted:
            return super().location_logits(model, features, prompts, class_emb)
        return self.location_scores(model, features, prompts, class_emb)

    def fit_probe(self, model, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray]) -> dict:
        """Fit on normalised (features, labels) of train, choose C on val, install the probe;
        returns the report for metrics.json."""
        from sklearn.linear_model import LogisticRegression

        (xtr, ytr), (xva, yva) = train, val
        if ytr.ndim != 1:
            raise ConfigError("method=linear_probe supports single-label cards")
        scores = {}
        for c in self.Cs:
            clf = LogisticRegression(C=c, max_iter=self.max_iter).fit(xtr, ytr)
            scores[c] = float((clf.predict(xva) == yva).mean())
        best = max(self.Cs, key=lambda c: (scores[c], -c))
        clf = LogisticRegression(C=best, max_iter=self.max_iter).fit(xtr, ytr)
        model.adapters["probe"].set(*sklearn_to_linear(clf, len(model.class_names)))
        return {"C": best, "val_top1_by_C": {str(c): s for c, s in scores.items()}}

    def save(self, model, folder: Path) -> None:
        probe = model.adapters["probe"]
        state = {"weight": probe.weight.detach().cpu().contiguous(), "bias": probe.bias.detach().cpu().contiguous()}
        save_file(state, str(Path(folder) / PROBE_FILE), metadata={"format": "pt"})

    def restore(self, model, folder: Path) -> dict[str, nn.Module]:
        modules = self.prepare(model)
        state = load_file(str(Path(folder) / PROBE_FILE))
        modules["probe"].set(state["weight"], state["bias"])
        return modules
