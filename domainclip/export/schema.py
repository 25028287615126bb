"""The versioned bundle ``metadata.json`` schema (the JSON-Schema file ships beside this module)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from domainclip.core.errors import BundleError
from domainclip.core.names import colliding

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("metadata.schema.json")


Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
MAX_INPUT_SIZE = 4096  # a tower input side; real ones are 224-518


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TowerInfo(_Open):
    name: str
    config: dict
    weights_digest: str = Field(min_length=64, max_length=64)


class MethodInfo(_Open):
    name: str
    config: dict


class CaptionInfo(_Open):
    template_set: str
    count: int
    texts: list[str] = Field(min_length=1)
    labels: list[int]
    provenance: list[dict]


class Preprocessing(_Open):
    size: int = Field(ge=8, le=MAX_INPUT_SIZE)
    mean: list[Finite] = Field(min_length=1, max_length=64)
    std: list[Positive] = Field(min_length=1, max_length=64)
    resize_mode: Literal["squash", "shortest", "longest"] = "squash"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    reader: str
    reader_options: dict
    domain: dict
    units: str | None
    label_level: Literal["image", "slide"] = Field(
        "image", description="slide: one prediction per whole slide (a bag of tiles pooled by the method)")

    @model_validator(mode="after")
    def _one_mean_and_std_per_channel(self) -> "Preprocessing":
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}: one of each per channel")
        return self


class DataCardInfo(_Open):
    name: str
    digest: str
    modality: str
    license: str = Field(min_length=1, description="the data card's license (required in the model card)")
    split_level: str
    counts: dict[str, dict[str, int]]


class ConformalScore(_Open):
    """One conformal score's locked threshold and the validation scores it came from."""

    threshold: float
    scores: list[Finite] = Field(min_length=1)

    @field_validator("threshold")
    @classmethod
    def _not_nan(cls, v: float) -> float:
        if math.isnan(v) or v == -math.inf:
            raise ValueError("must be a number (or +inf for sets of every class)")
        return v


class Conformal(_Open):
    """Split-conformal calibration for ``Predictor.predict_sets``."""

    alpha: float = Field(gt=0, lt=1)
    lac: ConformalScore
    aps: ConformalScore


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class EvalInfo(_Open):
    """The evaluation settings ``predict`` uses to pool tiles or chips to a file."""

    aggregate: Literal["mean", "topk"] = "mean"
    topk: int = Field(5, ge=1, le=100_000)
    bootstrap: int = Field(1000, ge=0, le=100_000)
    conformal_alpha: float | None = Field(None, gt=0, lt=1)


class BundleMetadata(_Open):
    """Everything a clinical evaluator needs to load and judge a bundle."""

    schema_version: Literal[1]
    tower: TowerInfo
    method: MethodInfo
    loss: dict
    classes: list[str] = Field(min_length=2)
    captions: CaptionInfo
    preprocessing: Preprocessing
    data_card: DataCardInfo
    metrics: dict
    temperature: float = Field(1.0, gt=0, allow_inf_nan=False, description="calibration temperature (> 0)")
    thresholds: dict = Field(default_factory=dict)
    input_adapter: dict | None = None
    conformal: Conformal | None = None
    reproduce: str
    files: list[str]
    versions: dict[str, str]
    eval_settings: EvalInfo | None = None

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, v: list[str]) -> list[str]:
        clashes = colliding(v)
        if clashes:
            raise ValueError(f"class names {clashes} differ only by case, spacing or invisible characters")
        return v

    @model_validator(mode="after")
    def _calibration_numbers(self) -> "BundleMetadata":
        """The numbers ``predict`` computes with (``metrics.clinical``: temperature, multi-label
        biases) are finite, in range and one per class."""
        clinical = self.metrics.get("clinical")
        if clinical is None:
            return self
        if not isinstance(clinical, dict):
            raise ValueError("metrics.clinical must be a mapping")
        temperature = clinical.get("temperature", 1.0)
        if not _finite(temperature) or temperature <= 0:
            raise ValueError(f"metrics.clinical.temperature={temperature!r} must be a finite number > 0")
        bias = clinical.get("bias")
        if bias is not None and (not isinstance(bias, list) or len(bias) != len(self.classes)
                                 or not all(_finite(b) for b in bias)):
            raise ValueError(f"metrics.clinical.bias must hold {len(self.classes)} finite numbers, one per class")
        return self


def json_schema() -> dict:
    """The JSON Schema of ``metadata.json``."""
    return BundleMetadata.model_json_schema()


def validate_metadata(meta: dict, where: str) -> BundleMetadata:
    """Validate bundle metadata; the error names each missing or wrong field."""
    try:
        return BundleMetadata.model_validate(meta)
    except ValidationError as exc:
        fields = "; ".join(f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise BundleError(f"{where}: metadata is incomplete or invalid: {fields}") from None


if __name__ == "__main__":  # regenerate the shipped schema file
    SCHEMA_FILE.write_text(json.dumps(json_schema(), indent=2) + "\n")
