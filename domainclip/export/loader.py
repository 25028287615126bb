"""``load_bundle``: a predictor from an export bundle, with no training code path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from domainclip.errors import BundleError
from domainclip.export.bundle import HEADS_FILE, SUMS_FILE, sha256_file
from domainclip.export.schema import validate_metadata
from domainclip.methods import build_method
from domainclip.methods.base import PromptSet
from domainclip.readers import read, read_record
from domainclip.towers import build_tower
from domainclip.towers.band_projection import BandProjection
from domainclip.transforms.pipeline import DomainOptions, Preprocess, model_input
from domainclip.transforms.spatial import min_side_for


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz")


def refuse_pickles(bundle: Path) -> None:
    """A bundle holds safetensors and text only; any pickle-capable file is refused unopened."""
    found = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if found:
        raise BundleError(f"{bundle}: refusing pickle-capable file(s) {found}; bundles carry safetensors only. "
                          "Delete them (they were not opened) or re-export the bundle")


def verify_sums(bundle: Path) -> None:
    """Refuse a bundle whose files do not match SHA256SUMS (or that has unlisted files)."""
    sums = bundle / SUMS_FILE
    if not sums.is_file():
        raise BundleError(f"{bundle}: {SUMS_FILE} is missing; re-export the bundle")
    listed = {}
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.strip()] = digest
    present = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file() and p.name != SUMS_FILE}
    extra = sorted(present - set(listed))
    if extra:
        raise BundleError(f"{bundle}: files not listed in {SUMS_FILE}: {extra}; remove them or re-export")
    for name, digest in listed.items():
        path = bundle / name
        if not path.is_file():
            raise BundleError(f"{bundle}: {name} is listed in {SUMS_FILE} but missing")
        if sha256_file(path) != digest:
            raise BundleError(f"{bundle}: {name} does not match its SHA-256 in {SUMS_FILE}; the file was modified")


class Predictor:
    """Class probabilities for images, reproducing the bundle's evaluation."""

    def __init__(self, bundle: Path, meta: dict, tower, method):
        self.bundle, self.meta, self.tower, self.method = bundle, meta, tower.eval(), method
        self.classes: list[str] = list(meta["classes"])
        pre = meta["preprocessing"]
        self.preprocess = Preprocess(size=pre["size"], mean=tuple(pre["mean"]), std=tuple(pre["std"]))
        self.domain = DomainOptions.from_dict(pre.get("domain"))
        self.reader, self.reader_options, self.units = pre["reader"], pre.get("reader_options", {}), pre.get("units")
        tok = tower.tokenize(meta["captions"]["texts"])
        self.prompts = PromptSet(tok["input_ids"], tok["attention_mask"], torch.tensor(meta["captions"]["labels"]),
                                 self.classes)
        self._class_emb = self._static_class_embeddings()

    @torch.inference_mode()
    def _static_class_embeddings(self) -> torch.Tensor | None:
        """Class embeddings encoded once, when they do not depend on the image (everything but
        CoCoOp and methods with their own scoring): predictions then run the image tower only."""
        from domainclip.methods.base import Method

        if type(self.method).logits is not Method.logits or getattr(self.method, "conditional", False):
            return None
        return self.method.class_embeddings(self.tower, self.prompts)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str], labels: list[int] | None = None) -> torch.Tensor:
        """Normalised text embeddings; with ``labels``, the per-class prompt-ensemble means."""
        tok = self.tower.tokenize(texts)
        emb = F.normalize(self.tower.encode_text(tok["input_ids"], tok["attention_mask"]), dim=-1)
        if labels is None:
            return emb
        out = torch.zeros(len(self.classes), emb.shape[-1]).index_add_(0, torch.tensor(labels), emb)
        return F.normalize(out, dim=-1)

    def load_record(self, record) -> torch.Tensor:
        """The tower input for a card record (tiles and chips carry their read options)."""
        arr, meta = read_record(record, self.reader, self.reader_options, self.preprocess.size)
        return model_input(arr, meta, self.domain, self.preprocess)

    def _pixels(self, images) -> torch.Tensor:
        """A ready (B, C, S, S) tensor as is; paths or (C, H, W) arrays read and preprocessed."""
        return images if isinstance(images, torch.Tensor) else torch.stack([self._to_tensor(i) for i in images])

    def _to_tensor(self, item) -> torch.Tensor:
        if isinstance(item, (str, Path)):
            arr, meta = read(item, reader=self.reader, min_side=min_side_for(self.preprocess.size), **self.reader_options)
        else:
            arr, meta = np.asarray(item, dtype=np.float32), {"units": self.units}
        return model_input(arr, meta, self.domain, self.preprocess)

    @torch.inference_mode()
    def embed_images(self, images) -> torch.Tensor:
        """Normalised image embeddings for paths, (C, H, W) arrays, or a ready (B, C, S, S) tensor."""
        pixels = self._pixels(images)
        return F.normalize(self.tower.encode_image(pixels), dim=-1)

    @torch.inference_mode()
    def raw_logits(self, images) -> torch.Tensor:
        """(N, K) logits of the method before calibration."""
        pixels = self._pixels(images)
        if self._class_emb is None:
            return self.method.logits(self.tower, {"pixels": pixels}, self.prompts)
        img = F.normalize(self.tower.encode_image(pixels), dim=-1)
        bias = self.tower.logit_bias if self.tower.logit_bias is not None else 0.0
        return self.tower.logit_scale * img @ self._class_emb.t() + bias

    @torch.inference_mode()
    def logits(self, images) -> torch.Tensor:
        """(N, K) logits divided by the calibration temperature locked on validation."""
        return self.raw_logits(images) / float(self.meta.get("temperature", 1.0))

    @torch.inference_mode()
    def predict(self, images) -> torch.Tensor:
        """(N, K) class probabilities: softmax of ``logits``; for multi-label bundles, per-class
        sigmoids with the temperature and biases calibrated on validation."""
        clinical = self.meta["metrics"].get("clinical", {})
        if clinical.get("multi_label"):
            from domainclip.evaluation.multilabel import probabilities

            return probabilities(self.raw_logits(images), clinical["temperature"], clinical["bias"])
        return self.logits(images).softmax(-1)


def load_bundle(path: str | Path, verify: bool = True) -> Predictor:
    """Load an export bundle into a :class:`Predictor` (checksums and base weights verified)."""
    bundle = Path(path)
    if not (bundle / "metadata.json").is_file():
        raise BundleError(f"{bundle}: not a domainclip bundle (metadata.json missing)")
    refuse_pickles(bundle)
    if verify:
        verify_sums(bundle)
    meta = json.loads((bundle / "metadata.json").read_text())
    validate_metadata(meta, str(bundle))
    tower = build_tower(meta["tower"]["config"])
    if verify and tower.weights_digest() != meta["tower"]["weights_digest"]:
        raise BundleError(f"{bundle}: the base tower's weights differ from those the bundle was trained on "
                          f"(digest {meta['tower']['weights_digest'][:16]}…); load the same base weights")
    if meta.get("input_adapter"):
        spec, pre = meta["input_adapter"], tower.preprocess
        tower.input_adapter = BandProjection(spec["in_channels"], spec["init"], pre.mean, pre.std)
    method = build_method(meta["method"]["config"])
    method.load(tower, bundle, list(meta["classes"]))
    heads = load_file(str(bundle / HEADS_FILE))
    with torch.no_grad():
        for name, tensor in tower.export_state_dict().items():
            tensor.copy_(heads[name])
    return Predictor(bundle, meta, tower, method)
