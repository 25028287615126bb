"""The DataCard schema: plain data describing a labelled image collection."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domainclip.core.names import colliding

SPLIT_NAMES = ("train", "val", "test")
SPLIT_LEVELS = ("patient", "study", "slide", "site", "spatial", "image")


class Strict(BaseModel):
    """Unknown keys are errors, so a typo in a card never passes silently."""

    model_config = ConfigDict(extra="forbid")


class ClassSpec(Strict):
    name: str
    synonyms: list[str] = Field(default_factory=list)
    description: str = ""


class ReaderSpec(Strict):
    name: str
    options: dict = Field(default_factory=dict)


class Columns(Strict):
    """Manifest column names."""

    path: str = "path"
    label: str = "label"
    group: str | None = None
    split: str | None = None


class SplitSpec(Strict):
    level: Literal["patient", "study", "slide", "site", "spatial", "image"] = "patient"
    fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.6, "val": 0.2, "test": 0.2})
    seed: int = 0
    stratify: bool = True  # keep each class's share close to the fractions in every split (groups stay whole)
    require_every_class: bool = Field(
        False, description="refuse a run where a class has too few groups to reach every split it needs "
        "(default: train on what exists and report the class as not evaluated on that split)")

    @field_validator("fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(SPLIT_NAMES)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}; allowed: {list(SPLIT_NAMES)}")
        if any(not math.isfinite(f) or f < 0 for f in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"fractions must be >= 0 and sum to 1, got {v}")
        return v


class CaptionSpec(Strict):
    template_set: str | None = None
    require_review: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)


class PhiSpec(Strict):
    columns: list[str] = Field(default_factory=list)
    dicom_tags: list[str] = Field(default_factory=lambda: ["PatientName", "PatientID", "PatientBirthDate"])
    allow: list[str] = Field(default_factory=list, description="values reviewed as not identifying (recorded in the bundle)")


class DataCard(Strict):
    """A validated data card. Paths are relative to the card's own directory."""

    name: str
    description: str = ""
    modality: str
    body_part: str = ""
    demo: str | None = None
    root: str = "."
    reader: ReaderSpec
    transforms: dict = Field(default_factory=dict)
    manifest: str | None = None
    layout: Literal["manifest", "folders"] = "manifest"
    columns: Columns = Field(default_factory=Columns)
    classes: list[ClassSpec]
    task: Literal["single_label", "multi_label"] = "single_label"
    label_level: Literal["image", "slide"] = Field(
        "image", description="'slide': labels are per whole slide, one slide is one sample (a bag of tiles)")
    label_separator: str = Field("|", min_length=1, pattern=r"\S",
                                 description="what separates a multi-label row's class names (not blank)")
    split: SplitSpec = Field(default_factory=SplitSpec)
    captions: CaptionSpec = Field(default_factory=CaptionSpec)
    phi: PhiSpec = Field(default_factory=PhiSpec)
    subgroups: list[str] = Field(default_factory=list, description="manifest columns reported as subgroups")
    license: str = ""
    citation: str = ""

    @field_validator("classes")
    @classmethod
    def _classes_unique(cls, v: list[ClassSpec]) -> list[ClassSpec]:
        if len(v) < 2:
            raise ValueError("a card needs at least 2 classes")
        names = [c.name for c in v]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        clashes = colliding(names)
        if clashes:
            raise ValueError(f"class names {clashes} differ only by case, spacing or invisible characters; "
                             "a reader (and a file system) would take them for one class: rename or merge them")
        return v

    @model_validator(mode="after")
    def _manifest_or_folders(self) -> "DataCard":
        if self.layout == "manifest" and not self.manifest:
            raise ValueError("layout 'manifest' needs a 'manifest' file (CSV or JSONL)")
        return self

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]
