"""``load_bundle``: a predictor from an export bundle, with no training code path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from domainclip.core.errors import BundleError, ConfigError, DomainClipError, InputError, ReadError
from domainclip.data.expand import cell_origin, cell_side, file_cells, needs_expansion
from domainclip.evaluation.aggregate import pool
from domainclip.evaluation.conformal import SCORES, prediction_sets, threshold_for
from domainclip.evaluation.evaluators import evaluator_of
from domainclip.evaluation.mosaic import stitch
from domainclip.evaluation.overlays import display_image
from domainclip.export.base_models import resolve_base
from domainclip.export.bundle_files import (  # noqa: F401 - re-exported: the checks' public import path
    IMPORTABLE_SUFFIXES,
    PICKLE_SUFFIXES,
    bundle_files,
    check_loaded,
    read_metadata,
    read_sums,
    refuse_pickles,
    verify_sums,
)
from domainclip.export.slides import predict_slide
from domainclip.model import AdaptedModel
from domainclip.model.adapted import MAP_SCORES, SPEC_FILE, read_spec
from domainclip.readers import read, read_record
from domainclip.readers.limits import LIMIT_OPTIONS
from domainclip.transforms.pipeline import DomainOptions, Preprocess, model_input
from domainclip.transforms.spatial import min_side_for

TILE_SUFFIXES = (".png", ".jpg", ".jpeg")  # a wsi bundle reads these as tiles cut beforehand


def map_score(texts: list[str] | None, score: str | None) -> str:
    """What a map shows: ``score`` checked, or by default ``"probability"`` for the classes and
    ``"similarity"`` for free texts (which have no calibrated probabilities)."""
    score = score or ("similarity" if texts else "probability")
    if score not in MAP_SCORES:
        raise ConfigError(f"explain: score={score!r} is not one of {list(MAP_SCORES)}")
    if texts and score == "probability":
        raise ConfigError("explain: texts are mapped by similarity (a free text has no calibrated probability); "
                          "drop score or pass score='similarity'")
    return score


class Predictor:
    """Class probabilities for images, reproducing the bundle's evaluation: the bundle's
    ``AdaptedModel`` plus its metadata (reader, preprocessing, temperature, thresholds, sets)."""

    def __init__(self, bundle: Path, meta: dict, model: AdaptedModel):
        self.bundle, self.meta, self.model = bundle, meta, model.eval()
        self.classes: list[str] = list(meta["classes"])
        pre = meta["preprocessing"]
        self.preprocess = Preprocess(size=pre["size"], mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                                     resize_mode=pre.get("resize_mode", "squash"),
                                     interpolation=pre.get("interpolation", "bilinear"))
        self.domain = DomainOptions.from_dict(pre.get("domain"))
        self.reader, self.units = pre["reader"], pre.get("units")
        # limits (pixel caps) are this loader's, never the bundle's: a bundle cannot lift them
        self.reader_options = {k: v for k, v in pre.get("reader_options", {}).items() if k not in LIMIT_OPTIONS}
        with torch.inference_mode():  # encoded once when they do not depend on the image
            self._class_emb = model.fixed_class_embeddings()

    @property
    def tower(self):
        """The bundle's tower (with any LoRA layers in place)."""
        return self.model.tower

    @property
    def method(self):
        """The bundle's method."""
        return self.model.method

    @torch.inference_mode()
    def embed_texts(self, texts: list[str], labels: list[int] | None = None) -> torch.Tensor:
        """Normalised text embeddings; with ``labels``, the per-class prompt-ensemble means."""
        tok = self.tower.tokenize(texts)
        emb = self.model.embed_texts(tok["input_ids"], tok["attention_mask"])
        if labels is None:
            return emb
        out = torch.zeros(len(self.classes), emb.shape[-1]).index_add_(0, torch.tensor(labels), emb)
        return F.normalize(out, dim=-1)

    def load_record(self, record) -> torch.Tensor:
        """The tower input for a card record (tiles and chips carry their read options)."""
        arr, meta = read_record(record, self.reader, self.reader_options, self.preprocess.size)
        return model_input(arr, meta, self.domain, self.preprocess)

    def _pixels(self, images) -> torch.Tensor:
        """A ready (B, C, S, S) tensor, checked; paths or (C, H, W) arrays read and preprocessed."""
        if isinstance(images, torch.Tensor):
            return self.checked_tensor(images)
        return torch.stack([self._to_tensor(i) for i in images])

    @property
    def input_channels(self) -> int:
        """Channels of a ready input tensor: the band projection's bands, else the tower's."""
        adapter = self.model.input_adapter
        if adapter is not None:
            return int(self.model.spec["input_adapter"]["in_channels"])
        return max(len(self.tower.preprocess.mean), 3)

    def checked_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """A ready input tensor, refused in one line unless it is (B, C, S, S) with this bundle's
        channels and input size and holds only finite values (a NaN would give NaN probabilities
        and empty sets)."""
        size, channels = self.preprocess.size, self.input_channels
        if x.ndim != 4 or x.shape[1] != channels or tuple(x.shape[-2:]) != (size, size):
            raise InputError(f"input tensor of shape {tuple(x.shape)}: this bundle takes (N, {channels}, {size}, {size}) "
                             "preprocessed pixels; pass image paths or (C, H, W) arrays to have them read and resized")
        if not x.is_floating_point():
            raise InputError(f"input tensor of dtype {x.dtype}: pass preprocessed float pixels")
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise InputError(f"input tensor holds {bad} NaN or infinite value(s) of {x.numel()}; fix the input")
        return x

    def _is_empty(self, images) -> bool:
        """An empty batch: an empty list, or a (0, C, S, S) tensor (its shape checked here; a
        non-empty tensor is checked once, where it is scored)."""
        if isinstance(images, torch.Tensor) and images.numel() == 0:
            self.checked_tensor(images)
        return len(images) == 0

    def _to_tensor(self, item, location: dict | None = None) -> torch.Tensor:
        if isinstance(item, (str, Path)):
            reader, options = self.reader, {**self.reader_options, **(location or {})}
            if self._pre_cut_tile(item):
                reader, options = "tiles", {"mpp": self.reader_options.get("mpp")}
            elif location is None and needs_expansion(self.reader, self.reader_options):
                raise ReadError(item, "input", f"the run cut such files into tiles or chips ({self.reader} reader)",
                                "pass the file to predict(), which reads and pools its tiles, or pass tiles/arrays")
            arr, meta = read(item, reader=reader, min_side=min_side_for(self.preprocess.size), **options)
        else:
            arr, meta = np.asarray(item, dtype=np.float32), {"units": self.units}
            if arr.ndim not in (2, 3) or arr.size == 0 or not np.isfinite(arr).all():
                raise InputError(f"input array of shape {arr.shape}: pass a non-empty (C, H, W) or (H, W) array of "
                                 "finite values in the bundle's units")
        return model_input(arr, meta, self.domain, self.preprocess)

    def _pre_cut_tile(self, item) -> bool:
        """A PNG/JPEG given to a whole-slide bundle: a tile cut beforehand, read as a tile."""
        return self.reader == "wsi" and Path(item).suffix.lower() in TILE_SUFFIXES

    def whole_file(self, item) -> bool:
        """Whether ``item`` is a slide or scene the run cut into tiles or chips (decided from the
        bundle's reader and the file name; nothing is read)."""
        return (isinstance(item, (str, Path)) and needs_expansion(self.reader, self.reader_options)
                and not self._pre_cut_tile(item))

    def cells(self, item) -> list[dict] | None:
        """For a slide or a scene the run cut into tiles or chips: the read options of each (the
        run's tissue filter or valid-pixel threshold); ``None`` for anything read whole."""
        if not self.whole_file(item):
            return None
        found = file_cells(self.reader, item, self.reader_options)
        if not found:
            raise ReadError(item, "grid", "no tile or chip passes the run's tissue / valid-pixel threshold",
                            "check the file, or pass pre-cut tiles or arrays")
        return found

    @torch.inference_mode()
    def embed_images(self, images) -> torch.Tensor:
        """Normalised image embeddings for paths, (C, H, W) arrays, or a ready (B, C, S, S) tensor."""
        images = images if isinstance(images, torch.Tensor) else list(images)
        if self._is_empty(images):
            one = self.model.embed_texts(self.model.prompt_ids[:1], self.model.prompt_mask[:1])
            return torch.empty(0, one.shape[-1])
        return self.model.embed_images(self._pixels(images))

    @torch.inference_mode()
    def raw_logits(self, images) -> torch.Tensor:
        """(N, K) logits of the method before calibration."""
        return self.model.logits(self._pixels(images), class_embeddings=self._class_emb)

    @torch.inference_mode()
    def logits(self, images) -> torch.Tensor:
        """(N, K) logits divided by the calibration temperature locked on validation."""
        return self.raw_logits(images) / float(self.meta.get("temperature", 1.0))

    @torch.inference_mode()
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities from raw logits: softmax at the locked temperature, or for
        multi-label bundles per-class sigmoids with the temperature and biases from validation."""
        clinical = {"temperature": float(self.meta.get("temperature", 1.0)), **self.meta["metrics"].get("clinical", {})}
        return evaluator_of(clinical).probabilities(logits, clinical)

    @torch.inference_mode()
    def predict(self, images, batch_size: int = 64) -> torch.Tensor:
        """(N, K) class probabilities, one row per input: a ready (B, C, S, S) tensor, (C, H, W)
        arrays, image files, pre-cut tiles, or whole slides and scenes, which are read exactly as
        the run read them (tiles or chips, tissue filter, windows) and pooled to the file with the
        run's aggregation (``eval.aggregate``: mean or top-k)."""
        images = images if isinstance(images, torch.Tensor) else list(images)
        if self._is_empty(images):
            return torch.empty(0, len(self.classes))
        if isinstance(images, torch.Tensor):
            return self.probabilities(self.raw_logits(images))
        if self.slide_level:  # each input is a whole slide, scored as one bag
            return torch.stack([p["probabilities"] for p in self.predict_slides(images, batch_size)])
        rows: list[torch.Tensor | None] = [None] * len(images)
        whole = []
        for i, item in enumerate(images):
            cells = self.cells(item)
            if cells is None:
                whole.append(i)
            else:
                rows[i] = pool(self.cell_probabilities(item, cells, batch_size), *self.aggregation)
        for start in range(0, len(whole), batch_size):
            idx = whole[start : start + batch_size]
            for i, p in zip(idx, self.probabilities(self.raw_logits([images[j] for j in idx]))):
                rows[i] = p
        return torch.stack(rows)

    @property
    def slide_level(self) -> bool:
        """True when the run's samples were whole slides (a card with ``label_level: slide``)."""
        return self.meta["preprocessing"].get("label_level", "image") == "slide"

    @torch.inference_mode()
    def predict_slides(self, paths, batch_size: int = 64) -> list[dict]:
        """Per whole slide, read with the run's reader options: calibrated ``probabilities`` (K,),
        the tiles' level-0 ``coords`` (n, 2) and ``attention`` (n,), and ``tile_side``. For
        slide-level bundles (MIL) the slide is one bag pooled by the method; see
        ``domainclip.export.slides``."""
        return [predict_slide(self, path, batch_size) for path in paths]

    @torch.inference_mode()
    def predict_sets(self, images, alpha: float | None = None, score: str = "lac", batch_size: int = 64) -> list[list[str]]:
        """Split-conformal prediction sets, one list of class names per input: each holds the true
        class with probability at least ``1 - alpha`` for images exchangeable with the run's
        validation groups. ``alpha=None`` uses the run's ``eval.conformal_alpha``; another alpha is
        recalibrated from the stored validation scores. ``score``: ``lac`` (smallest sets) or ``aps``
        (adaptive). Sets are calibrated per image (tile, chip): pass those, not whole slides or scenes."""
        stored = self.meta.get("conformal")
        if not stored:
            raise BundleError(f"{self.bundle}: metadata.json has no conformal calibration; export from a "
                              "single-label run that evaluates the val split")
        if score not in SCORES:
            raise ValueError(f"score='{score}' is not one of {list(SCORES)}")
        if alpha is not None and not 0 < alpha < 1:
            raise ValueError(f"alpha={alpha} must lie in (0, 1), e.g. 0.1 for 90% coverage")
        images = images if isinstance(images, torch.Tensor) else list(images)
        if self._is_empty(images):
            return []
        same = alpha is None or alpha == stored["alpha"]
        threshold = stored[score]["threshold"] if same else threshold_for(stored[score]["scores"], alpha)
        if isinstance(images, torch.Tensor):
            probs = self.raw_logits(images).softmax(-1)
        else:
            images = self._tiles_only(images, "prediction sets are calibrated", "predict_sets")
            probs = torch.cat([self.raw_logits(images[i : i + batch_size]).softmax(-1)
                               for i in range(0, len(images), batch_size)])
        members = prediction_sets(probs.double().numpy(), threshold, score)
        return [[c for c, keep in zip(self.classes, row) if keep] for row in members]

    @torch.inference_mode()
    def explain(self, images, texts: list[str] | None = None, batch_size: int = 16,
                score: str | None = None) -> torch.Tensor:
        """(N, K, S, S) maps at the model's input size: for each input, where each class (or each
        of ``texts``) matches, from the bundle's adapted model. ``score``: ``"probability"`` (the
        default for classes) gives each location the class probabilities ``predict`` would give
        an image made of that location alone (``AdaptedModel.probability_maps``, with the locked
        calibration); ``"similarity"`` (the only choice for ``texts``) the cosine similarity
        (``AdaptedModel.similarity_maps``). Inputs are read and preprocessed as ``predict`` reads
        tiles, chips and arrays; a whole slide or scene goes to ``explain_file``, which stitches its
        tiles' maps."""
        if not isinstance(images, torch.Tensor):
            images = self._tiles_only(images, "similarity maps are computed", "explain (or the file to explain_file)")
        score = map_score(texts, score)
        if self._is_empty(images):
            size = self.preprocess.size
            return torch.empty(0, len(texts) if texts else len(self.classes), size, size)
        classes = self.embed_texts(list(texts)) if texts else None
        return torch.cat([self._maps(self._pixels(images[start : start + batch_size]), classes, score)
                          for start in range(0, len(images), batch_size)])

    @torch.inference_mode()
    def explain_file(self, path, texts: list[str] | None = None, cell_px: int = 64, batch_size: int = 16,
                     score: str | None = None) -> dict:
        """Maps (as ``explain``) of a whole slide or scene, read as the run read it: every tile or
        chip that passes the run's tissue or valid-pixel filter is explained, and the tiles and their
        maps are stitched where they lie (``cell_px`` pixels per tile). Returns ``image`` (H, W, 3)
        in 0..1 (white where no tile lies), ``maps`` (K, H, W) (NaN there), ``probabilities`` (K,)
        pooled as ``predict`` pools them, and ``cells`` (each tile's or chip's read options)."""
        cells = self.cells(path)
        if cells is None:
            raise ReadError(path, "input", "not a slide or scene that this bundle's run cut into tiles or chips",
                            "pass it to explain()")
        score = map_score(texts, score)
        classes = self.embed_texts(list(texts)) if texts else None
        maps, shown, probs = [], [], []
        for pixels in self._cell_batches(path, cells, batch_size):
            maps.append(self._maps(pixels, classes, score))
            probs.append(self.probabilities(self.raw_logits(pixels)))
            shown += [display_image(p, self.preprocess.mean, self.preprocess.std) for p in pixels]
        side = cell_side(self.reader, path, self.reader_options)
        image, stitched = stitch([cell_origin(c) for c in cells], side, np.stack(shown), torch.cat(maps), cell_px)
        return {"image": image, "maps": stitched, "probabilities": pool(torch.cat(probs), *self.aggregation),
                "cells": cells}

    def _maps(self, pixels: torch.Tensor, classes: torch.Tensor | None, score: str) -> torch.Tensor:
        """(B, K, S, S) maps of one batch of ready pixels, by ``score`` (see ``explain``)."""
        return self.model.maps(pixels, score, self.probabilities, class_embeddings=classes,
                               method_classes=self._class_emb)

    def _tiles_only(self, images, what: str, method: str) -> list:
        """The inputs as a list; a whole slide or scene (which the run cut into tiles or chips) is
        refused, naming ``what`` is per tile and which ``method`` to pass the tiles to."""
        images = list(images)
        for item in images:
            if self.whole_file(item):
                raise ReadError(item, "input", f"{what} per tile or chip, not per slide or scene",
                                f"pass the tiles or chips (or arrays) to {method}")
        return images

    @property
    def aggregation(self) -> tuple[str, int]:
        """How the run pooled images to its clinical unit (``eval.aggregate``, ``eval.topk``)."""
        settings = self.meta.get("eval_settings") or {}
        return str(settings.get("aggregate", "mean")), int(settings.get("topk", 5))

    @torch.inference_mode()
    def cell_probabilities(self, item, cells: list[dict], batch_size: int = 64) -> torch.Tensor:
        """(tiles, K) probabilities of one slide's tiles or one scene's chips, in grid order."""
        return torch.cat([self.probabilities(self.raw_logits(p)) for p in self._cell_batches(item, cells, batch_size)])

    def _cell_batches(self, item, cells: list[dict], batch_size: int):
        """The tower inputs of a file's tiles or chips, ``batch_size`` at a time, in grid order."""
        for start in range(0, len(cells), batch_size):
            yield torch.stack([self._to_tensor(item, c) for c in cells[start : start + batch_size]])


def load_bundle(path: str | Path, verify: bool = True, base=None) -> Predictor:
    """Load an export bundle into a :class:`Predictor`.

    Nothing in the bundle runs: it holds safetensors and text, every file is checked against
    ``SHA256SUMS``, and the base tower comes from ``base`` (a directory, or a dict per source for
    two-tower models) or this machine's registry of base models, never from a path in the bundle;
    its weights' digest is verified before the tower is built.
    """
    bundle = Path(path).resolve()  # "." names the working directory's bundle by its real name
    if not bundle.is_dir():
        hint = f" (an interrupted export left it as .previous: put it back with python -m domainclip.export " \
            f"repair={bundle})" \
            if bundle.with_name(bundle.name + ".previous").is_dir() else ""
        raise BundleError(f"{bundle}: no such bundle folder{hint}")
    if not (bundle / "metadata.json").is_file():
        raise BundleError(f"{bundle}: not a domainclip bundle (metadata.json missing)")
    files = bundle_files(bundle)  # one walk: symlinks, pickles and checksums all check this listing
    refuse_pickles(bundle, files)
    if verify:
        verify_sums(bundle, files)
    meta = read_metadata(bundle)
    tower = resolve_base(bundle, meta["tower"], base, verify)
    spec = read_spec(bundle)
    if spec["method"] != meta["method"]["config"] or spec["classes"] != meta["classes"]:
        raise BundleError(f"{bundle}: {SPEC_FILE} and metadata.json disagree on the method or the classes; "
                          "re-export the bundle")
    try:
        model = AdaptedModel.load(bundle, tower=tower)
    except DomainClipError:
        raise
    except Exception as exc:  # noqa: BLE001 - peft/safetensors errors on damaged adapter files
        raise BundleError(f"{bundle}: the {meta['method']['name']} adapter files cannot be loaded "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); re-export the bundle") from None
    check_loaded(bundle, meta, model)
    return Predictor(bundle, meta, model)
