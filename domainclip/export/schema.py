"""The versioned bundle ``metadata.json`` schema (the JSON-Schema file ships beside this module)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domainclip.core.errors import BundleError

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("metadata.schema.json")


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
    size: int
    mean: list[float]
    std: list[float]
    resize_mode: Literal["squash", "shortest", "longest"] = "squash"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    reader: str
    reader_options: dict
    domain: dict
    units: str | None
    label_level: Literal["image", "slide"] = Field(
        "image", description="slide: one prediction per whole slide (a bag of tiles pooled by the method)")


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
    scores: list[float]


class Conformal(_Open):
    """Split-conformal calibration for ``Predictor.predict_sets``."""

    alpha: float = Field(gt=0, lt=1)
    lac: ConformalScore
    aps: ConformalScore


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
