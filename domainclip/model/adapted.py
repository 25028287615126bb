"""``AdaptedModel``: the one owner of adapted weights.

It assembles a tower, the optional input adapter (band projection) and the method's own modules
(probe, prompt learner, visual prompts, LoRA handle, ...) in one ``nn.ModuleDict``. The Lightning
task wraps one, the bundle's ``Predictor`` loads one, tests build one; nothing else assembles a
model. Methods never set attributes on the tower: they return their modules from ``prepare``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from domainclip.core.errors import BundleError
from domainclip.core.fileio import load_safetensors
from domainclip.core.safe_json import loads_bounded
from domainclip.methods.base import Method, PromptSet, build_method, freeze, scaled_similarity  # noqa: F401
from domainclip.towers.band_projection import BandProjection
from domainclip.towers.base import Tower, build_tower

SPEC_FILE = "adapted_model.json"
HEADS_FILE = "heads.safetensors"
INPUT_ADAPTER = "input_adapter"
ZERO_SHOT = Method()
MAP_SCORES = ("probability", "similarity")  # what a map shows: see AdaptedModel.maps


def read_spec(folder: Path) -> dict:
    """The plain-data spec ``AdaptedModel.save`` wrote into ``folder``."""
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        raise BundleError(f"{folder}: {SPEC_FILE} is missing; save the model with AdaptedModel.save (re-export)")
    spec = loads_bounded(path.read_text(encoding="utf-8", errors="replace"), str(path), BundleError)
    missing = [k for k in ("tower", "method", "classes", "prompts", "prompt_labels") if not isinstance(spec, dict)
               or k not in spec]
    if missing:
        raise BundleError(f"{path}: missing {missing}; re-export")
    return spec


class AdaptedModel(nn.Module):
    """A tower plus everything adaptation adds to it.

    ``spec`` is plain data (tower and method configs, class names, the zero-shot prompts and their
    classes, the input adapter): ``save`` writes it next to the weights so that ``load`` rebuilds
    the same model from a folder alone.
    """

    def __init__(self, tower: Tower, method: Method, spec: dict, restore_from: Path | None = None):
        super().__init__()
        self.tower, self.method, self.spec = tower, method, spec
        self.class_names: list[str] = list(spec["classes"])
        tok = tower.tokenize(spec["prompts"])
        self.register_buffer("prompt_ids", tok["input_ids"], persistent=False)
        self.register_buffer("prompt_mask", tok["attention_mask"], persistent=False)
        self.register_buffer("prompt_labels", torch.tensor(spec["prompt_labels"], dtype=torch.long), persistent=False)
        self.adapters = nn.ModuleDict()
        adapter = spec.get("input_adapter")
        if adapter:
            pre = tower.preprocess
            self.adapters[INPUT_ADAPTER] = BandProjection(adapter["in_channels"], adapter["init"], pre.mean, pre.std)
        if restore_from is None:
            self.adapters.update(method.prepare(self))
        else:
            self.adapters.update(method.restore(self, Path(restore_from)))
            self._load_heads(Path(restore_from))
            freeze(self)

    # ----- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, tower: dict, method: dict, classes: list[str], prompts: list[str], prompt_labels: list[int],
              input_adapter: dict | None = None) -> "AdaptedModel":
        """A model from plain configs: the tower named by ``tower['name']``, the method named by
        ``method['name']``, and the zero-shot prompt ensemble (``prompts[i]`` describes class
        ``prompt_labels[i]``)."""
        spec = {"tower": dict(tower), "method": dict(method), "classes": list(classes), "prompts": list(prompts),
                "prompt_labels": [int(k) for k in prompt_labels], "input_adapter": input_adapter}
        return cls(build_tower(tower), build_method(method), spec)

    def zero_shot_start(self, seed: int = 0) -> "AdaptedModel":
        """The model before adaptation, for comparisons: the same tower, classes, prompts and input
        adapter with the zero-shot method, heads initialised as a run seeded with ``seed`` starts
        them (the global random state is left as it was)."""
        spec = self.spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return AdaptedModel.build(spec["tower"], {"name": "zero_shot"}, spec["classes"], spec["prompts"],
                                      spec["prompt_labels"], spec["input_adapter"]).eval()

    @classmethod
    def load(cls, folder: str | Path, tower: dict | None = None) -> "AdaptedModel":
        """The model ``save`` wrote into ``folder``, frozen. ``tower`` replaces the saved tower
        config (bundles pass the base model resolved on this machine)."""
        folder = Path(folder)
        spec = read_spec(folder)
        if tower is not None:
            spec["tower"] = dict(tower)
        return cls(build_tower(spec["tower"]), build_method(spec["method"]), spec, restore_from=folder).eval()

    def save(self, folder: str | Path, tower_config: dict | None = None) -> Path:
        """Write the spec, the heads (with the input adapter) and the method's own files into
        ``folder`` (safetensors and JSON only); returns ``folder``. ``tower_config`` replaces the
        recorded tower config (bundles record a portable one, without local paths)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        spec = {**self.spec, "tower": dict(tower_config if tower_config is not None else self.spec["tower"])}
        (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
        heads = {k: v.detach().cpu().contiguous() for k, v in self.head_state().items()}
        save_file(heads, str(folder / HEADS_FILE), metadata={"format": "pt"})
        self.method.save(self, folder)
        return folder

    def files(self) -> list[str]:
        """The file names ``save`` writes."""
        return [SPEC_FILE, HEADS_FILE, *self.method.export_files]

    def head_state(self) -> dict[str, torch.Tensor]:
        """Heads, temperature and the input adapter (``input_adapter.*``): the trained tensors
        outside the method's own files."""
        state = dict(self.tower.head_state_dict())
        if self.input_adapter is not None:
            state.update({f"{INPUT_ADAPTER}.{k}": v for k, v in self.input_adapter.state_dict().items()})
        return state

    def _load_heads(self, folder: Path) -> None:
        heads = load_safetensors(folder / HEADS_FILE)
        with torch.no_grad():
            for name, tensor in self.head_state().items():
                if name not in heads or heads[name].shape != tensor.shape:
                    raise BundleError(f"{folder}/{HEADS_FILE}: tensor '{name}' is missing or has the wrong shape; "
                                      "re-export the bundle")
                tensor.copy_(heads[name])

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every tensor adaptation changes (heads, input adapter, the method's modules and the
        tower tensors it trains in place, e.g. LoRA), by parameter name."""
        own = {f"adapters.{k}" for k in self.adapters.state_dict()}
        changed = own | {f"tower.{k}" for k in self.method.tower_tensors(self)}
        changed |= {f"tower.{k}" for k in self.tower.head_state_dict()}
        return {k: v for k, v in self.state_dict().items() if k in changed}

    # ----- forward ----------------------------------------------------------------------------
    @property
    def input_adapter(self) -> nn.Module | None:
        """The band projection in front of the image tower, if the data needs one."""
        return self.adapters[INPUT_ADAPTER] if INPUT_ADAPTER in self.adapters else None

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Backbone features (before the head), after the optional input adapter."""
        if self.input_adapter is not None:
            pixels = self.input_adapter(pixels)
        return self.tower.image_features(pixels)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) unnormalised image embeddings."""
        return self.tower.image_head(self.image_features(pixels))

    def embed_images(self, batch: dict | torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings of pixels, or of a batch holding ``pixels`` or cached ``features``."""
        if isinstance(batch, torch.Tensor):
            return F.normalize(self.encode_image(batch), dim=-1)
        emb = self.tower.image_head(batch["features"]) if "features" in batch else self.encode_image(batch["pixels"])
        return F.normalize(emb, dim=-1)

    def similarity_maps(self, pixels: torch.Tensor, class_embeddings: torch.Tensor | None = None,
                        zero_shot: bool = False, method_classes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, H, W) where each image location matches each class, at the input's resolution
        (bilinear): cosine similarity of the location's embedding to the class embedding of the
        method (``zero_shot``: the template ensemble; ``class_embeddings``: any (K, D) texts), or
        the linear probe's logit. Uses the tower's per-location features (``dense_features``).
        ``method_classes``: the method's own class embeddings encoded once
        (``fixed_class_embeddings``), so repeated calls do not re-encode the prompts."""
        method, classes, features = self._dense_inputs(pixels, class_embeddings, zero_shot, method_classes)
        return upsample_maps(method.location_scores(self, features, self.prompt_set(), classes), pixels)

    def location_logits(self, pixels: torch.Tensor, class_embeddings: torch.Tensor | None = None,
                        zero_shot: bool = False, method_classes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, h, w) on the tower's feature grid: the logit ``logits`` would give each class if
        the image were that one location (its embedding scored as an image's, scale and bias
        included). Arguments as for ``similarity_maps``."""
        method, classes, features = self._dense_inputs(pixels, class_embeddings, zero_shot, method_classes)
        return method.location_logits(self, features, self.prompt_set(), classes)

    def probability_maps(self, pixels: torch.Tensor, to_probabilities=None, **classes) -> torch.Tensor:
        """(B, K, H, W) at the input's resolution (bilinear): each location's class probabilities,
        ``to_probabilities`` ((N, K) logits -> (N, K); default softmax) applied to its
        ``location_logits``. Unlike a similarity, a probability is high only where the class wins
        over the others, as in per-pixel classification with CLIP (MaskCLIP, Zhou et al., ECCV
        2022) and class activation maps (Zhou et al., CVPR 2016). ``classes``: as for
        ``similarity_maps``."""
        logits = self.location_logits(pixels, **classes)
        flat = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1]).float()
        probs = to_probabilities(flat) if to_probabilities is not None else flat.softmax(-1)
        grid = probs.reshape(logits.shape[0], *logits.shape[2:], -1).permute(0, 3, 1, 2)
        return upsample_maps(grid, pixels)

    def maps(self, pixels: torch.Tensor, score: str = "probability", to_probabilities=None,
             **classes) -> torch.Tensor:
        """(B, K, H, W) maps of ``score`` (one of ``MAP_SCORES``): ``probability_maps`` (with
        ``to_probabilities``) or ``similarity_maps``; ``classes`` as for those."""
        if score not in MAP_SCORES:
            raise ValueError(f"score={score!r}: use one of {list(MAP_SCORES)}")
        if score == "probability":
            return self.probability_maps(pixels, to_probabilities, **classes)
        return self.similarity_maps(pixels, **classes)

    def _dense_inputs(self, pixels, class_embeddings, zero_shot, method_classes):
        """(method, class embeddings, per-location features) that a map of ``pixels`` scores."""
        if self.input_adapter is not None:
            pixels = self.input_adapter(pixels)
        features = self.tower.dense_features(pixels)
        if zero_shot or class_embeddings is not None:
            return ZERO_SHOT, class_embeddings, features
        return self.method, method_classes, features

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised text embeddings of tokenised texts."""
        return F.normalize(self.tower.encode_text(input_ids, attention_mask), dim=-1)

    def prompt_set(self) -> PromptSet:
        """The zero-shot template prompts, tokenised, with the class of each."""
        return PromptSet(self.prompt_ids, self.prompt_mask, self.prompt_labels, self.class_names)

    def class_embeddings(self, zero_shot: bool = False) -> torch.Tensor:
        """(K, D) class embeddings of the method (or of the template ensemble with ``zero_shot``)."""
        return (ZERO_SHOT if zero_shot else self.method).class_embeddings(self, self.prompt_set())

    def fixed_class_embeddings(self, zero_shot: bool = False) -> torch.Tensor | None:
        """The (K, D) class embeddings to encode once and reuse for every batch, or None when the
        method conditions its classes on each image (CoCoOp)."""
        method = ZERO_SHOT if zero_shot else self.method
        return method.class_embeddings(self, self.prompt_set()) if method.static_classes else None

    def classification_inputs(self, batch: dict) -> tuple:
        """(logits, targets, valid) the classification objective compares (tile-label training
        gives one row per tile)."""
        return self.method.classification_inputs(self, batch, self.prompt_set())

    def bag_outputs(self, batch: dict, zero_shot: bool = False,
                    class_embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Slide logits (B, K) of a batch of bags (``features`` (B, N, F) and ``tile_mask``) and
        each tile's weight in them (B, N): attention, or the mean's uniform weights."""
        method = ZERO_SHOT if zero_shot else self.method
        return method.bag_outputs(self, batch, self.prompt_set(), class_embeddings)

    def logits(self, batch: dict | torch.Tensor, zero_shot: bool = False,
               class_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) class logits for a batch (or pixels); ``zero_shot`` scores with the template
        prompt ensemble whatever the method (the baseline); ``class_embeddings`` reuses classes
        encoded once (only for methods whose classes do not depend on the image)."""
        batch = {"pixels": batch} if isinstance(batch, torch.Tensor) else batch
        method = ZERO_SHOT if zero_shot else self.method
        return method.logits(self, batch, self.prompt_set(), class_embeddings)


def upsample_maps(scores: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) grid scores at the size of ``pixels`` (bilinear, ``align_corners=False``)."""
    return F.interpolate(scores.float(), size=pixels.shape[-2:], mode="bilinear", align_corners=False)
