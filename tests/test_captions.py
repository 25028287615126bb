"""Captions: templates for every modality, multi-label joins, seeded sampling, LLM expansion
(validation, cache, provenance) and the clinician review round trip."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from domainclip.captions.bank import build_bank
from domainclip.captions.build import prepare_captions
from domainclip.captions.llm import LLMSettings, expand, parse_lines
from domainclip.captions.templates import label_captions, template_sets
from domainclip.captions.validate import CaptionRules, validate_captions
from domainclip.cards.manifest import Record
from domainclip.cards.schema import DataCard
from domainclip.data import load_card_data
from domainclip.training.task import caption_choice

MODALITY_SETS = ["ct", "mri", "xray", "ultrasound", "fundus", "he_pathology", "ihc", "dermatology",
                 "satellite_rgb", "satellite_multispectral", "astronomy"]


def card(task="single_label", **kw) -> DataCard:
    return DataCard.model_validate({
        "name": "c", "modality": "CT", "body_part": "chest", "reader": {"name": "image"}, "manifest": "m.csv",
        "classes": [{"name": "effusion", "synonyms": ["pleural fluid"], "description": "fluid in the pleural space"},
                    {"name": "nodule", "description": "a round opacity"},
                    {"name": "consolidation", "description": "airspace opacity"}],
        "task": task, "captions": {"metadata": {"window": "lung-window"}}, **kw})


@pytest.mark.parametrize("name", MODALITY_SETS)
def test_every_modality_set_renders(name):
    assert name in template_sets()
    caps = label_captions(card(), template_sets()[name], (0,))
    assert len(caps) >= 3 and all("ffusion" in c.text or "pleural fluid" in c.text for c in caps)
    assert all("{" not in c.text for c in caps)


def test_synonyms_and_descriptions_are_used():
    texts = [c.text for c in label_captions(card(), template_sets()["ct"], (0,))]
    assert any("pleural fluid" in t for t in texts) and any("fluid in the pleural space" in t for t in texts)
    assert any("lung-window" in t for t in texts)


def test_multi_label_joins_positives_and_states_absent_findings():
    c = card(task="multi_label")
    texts = [x.text for x in label_captions(c, ["a chest CT showing {label}."], (0, 1, 2))]
    assert texts == ["A chest CT showing effusion, nodule and consolidation."]
    texts = [x.text for x in label_captions(c, ["a chest CT showing {label}."], (0, 2), absent_findings=True)]
    assert texts == ["A chest CT showing effusion and consolidation. No nodule."]


def test_caption_sampling_is_seeded_and_varies_by_epoch():
    draws = [[caption_choice(0, epoch, i, 12) for i in range(50)] for epoch in range(3)]
    assert draws[0] == [caption_choice(0, 0, i, 12) for i in range(50)]
    assert draws[0] != draws[1] != draws[2]
    assert [caption_choice(1, 0, i, 12) for i in range(50)] != draws[0]
    assert len(set(draws[0])) > 6  # spread over the captions


def test_bank_pools_by_label_set_and_safe_metadata():
    recs = [Record(path=__import__("pathlib").Path(f"{i}.dcm"), labels=(i % 2,), group=f"p{i}",
                   extra={"PatientName": "SECRET^NAME"}) for i in range(4)]
    bank = build_bank(card(reader={"name": "dicom", "options": {"window": "lung"}}), {"train": recs}, template_sets()["ct"])
    assert len(bank.pools) == 2 and bank.pool_ids["train"] == [0, 1, 0, 1]
    assert not any("SECRET" in t for t in bank.texts)
    assert all(bank.provenance[r]["source"] == "template" for r in bank.pools[0])


GOOD = ["A chest CT showing a right pleural effusion.", "Pleural fluid layering posteriorly on chest CT."]
BAD = [
    "A chest CT.",                                             # off topic (no class named)
    "Effusion.",                                               # too short
    "A chest CT showing a right pleural effusion.",            # duplicate
    "Chest CT with effusion and a nodule in the left lobe.",   # names another class
    "Effusion seen on CT performed 2023-04-01 for this man.",  # PHI: date
    "Patient MRN 12345678 has a pleural effusion on CT.",      # PHI: MRN-like number
]


def fake_generator(calls: list):
    def make(settings):
        def generate(prompt, seed):
            calls.append(prompt)
            # the prompt ends with "1." so a model continues without the first number
            lines = GOOD + BAD
            return lines[0] + "\n" + "\n".join(f"{i + 2}. {x}" for i, x in enumerate(lines[1:])) if "effusion" in prompt \
                else "garbage zzz qqq"
        return generate
    return make


def test_validator_keeps_exactly_the_good_lines():
    lines = parse_lines("1. " + "\n".join(f"{i + 2}. {x}" for i, x in enumerate(GOOD[1:] + BAD)))
    verdict = validate_captions([GOOD[0], *lines], ["effusion", "pleural fluid"], ["nodule", "consolidation"],
                                CaptionRules())
    assert verdict.accepted == GOOD
    assert dict(verdict.rejected) == {"off_topic": 1, "length": 1, "duplicate": 1, "contradiction": 1, "phi": 2}


def test_llm_expansion_validates_caches_and_reports(tmp_path):
    calls = []
    settings = LLMSettings(path=str(tmp_path), n=5)
    first = expand(card(), "digest", settings, tmp_path / "cache.jsonl", fake_generator(calls))
    assert len(calls) == 3 and first.generated == 3
    assert first.captions[0] == GOOD and first.captions[1] == [] and first.captions[2] == []
    assert first.rejected["phi"] == 2
    entry = json.loads((tmp_path / "cache.jsonl").read_text().splitlines()[0])
    assert {"key", "class", "model", "prompt_hash", "seed", "captions"} <= set(entry)
    calls.clear()
    again = expand(card(), "digest", settings, tmp_path / "cache.jsonl", fake_generator(calls))
    assert calls == [] and again.cache_hits == 3 and again.captions == first.captions
    changed = expand(card(), "digest", LLMSettings(path=str(tmp_path), n=5, seed=1), tmp_path / "cache.jsonl",
                     fake_generator(calls))
    assert len(calls) == 3 and changed.generated == 3  # a new seed is a new cache key


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a chest ct image showing tumour stroma fat"] * 10, vocab_size=300,
                            special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=tok.vocab_size, n_positions=512, n_embd=32, n_layer=2, n_head=2)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_tiny_random_gpt2_drives_the_llm_path_end_to_end(tiny_gpt2):
    data = load_card_data("demo_pathology")
    llm = {"path": str(tiny_gpt2), "n": 3, "seed": 0, "max_new_tokens": 40}
    bank, report = prepare_captions(data, llm=llm)
    assert report["llm"]["accepted"] == 0 and sum(report["llm"]["rejected"].values()) > 0
    assert report["llm"]["filled_by_templates"] == data.class_names
    assert report["from_templates"] == report["captions"] and report["from_llm"] == 0 and all(len(p) >= 3 for p in bank.pools)
    bank2, report2 = prepare_captions(data, llm=llm)
    assert report2["llm"]["cache_hits"] == 4 and report2["llm"]["generated_classes"] == 0
    assert bank2.texts == bank.texts


def test_run_uses_generated_captions_and_reports_counts(make_cfg, tiny_gpt2, tiny_tower):
    from domainclip.pipeline.run import run

    result = run(make_cfg("recipe=pathology", *tiny_tower, f"captions.llm.path={tiny_gpt2}", "captions.llm.max_new_tokens=30",
                          "trainer.max_epochs=1", "export.enabled=false",
                          "trainer.enable_progress_bar=false"))
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["captions"]["llm"]["model"].startswith("tiny-gpt2")
    assert "rejected" in saved["captions"]["llm"]


def test_review_round_trip_restricts_training_captions(tmp_path):
    from domainclip.captions.__main__ import main

    out = tmp_path / "review.csv"
    assert main(["export-review", "demo_satellite", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {"class", "caption", "source", "approved"} == set(rows[0])
    keep = {r["caption"] for r in rows if "false-colour" in r["caption"] or "Sentinel" in r["caption"]}
    for r in rows:
        r["approved"] = "yes" if r["caption"] in keep else "no"
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert main(["import-review", "demo_satellite", str(out)]) == 0
    data = load_card_data("demo_satellite")
    data.card.captions.require_review = True
    bank, report = prepare_captions(data)
    used = {bank.texts[r] for pool in bank.pools for r in pool}
    assert used and used <= keep and report["reviewed"]


def test_require_review_without_review_is_a_clear_error(tmp_path):
    from domainclip.core.errors import ConfigError

    data = load_card_data("demo_radiology")
    data.card.captions.require_review = True
    with pytest.raises(ConfigError, match="export-review"):
        prepare_captions(data)


def test_captions_are_the_same_with_or_without_the_file_check(tmp_path):
    """Captions depend on the card and its records only: the preflight file check (training) and the
    paths that skip it (preview, export-review, the shard builder) render the same bank, window
    captions included."""
    from domainclip.captions.__main__ import main

    checked = load_card_data("demo_radiology", on_error="fail")
    unchecked = load_card_data("demo_radiology")
    bank_a, _ = prepare_captions(checked)
    bank_b, _ = prepare_captions(unchecked)
    assert bank_a.texts == bank_b.texts and bank_a.pool_ids == bank_b.pool_ids
    window = [t for t in bank_a.texts if "lung-window" in t]
    assert window  # the card's reader.options.window reaches the captions
    out = tmp_path / "review.csv"
    assert main(["export-review", "demo_radiology", "--out", str(out)]) == 0
    reviewed = {r["caption"] for r in csv.DictReader(out.open())}
    assert set(bank_a.texts) <= reviewed  # the clinician reviews every caption training uses


def test_captions_are_identical_on_the_five_paths(tmp_path, capsys):
    """Training, preview, export-review, the shard builder and a WiSE-FT reference card all build
    the same caption bank from a card whose reader options feed the templates (CT windows)."""
    import tarfile

    from domainclip.captions.__main__ import main
    from domainclip.pipeline.reference import ReferenceZeroShot
    from domainclip.shards import build_shards

    training, _ = prepare_captions(load_card_data("demo_radiology", on_error="fail"))  # what run.setup builds
    everything = set(training.texts)
    assert any("lung-window" in t for t in everything)

    assert main(["preview", "demo_radiology", "--n", "1000"]) == 0
    shown = {line.strip()[2:].rsplit("  (", 1)[0] for line in capsys.readouterr().out.splitlines()
             if line.startswith("  - ")}
    assert shown == everything

    out = tmp_path / "review.csv"
    assert main(["export-review", "demo_radiology", "--out", str(out)]) == 0
    assert {r["caption"] for r in csv.DictReader(out.open())} == everything

    build_shards("demo_radiology", tmp_path / "shards", size=16, shard_mb=1)
    in_shards = set()
    for tar in sorted((tmp_path / "shards").glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    in_shards.update(json.loads(t.extractfile(m).read())["captions"])
    assert in_shards == everything

    reference = ReferenceZeroShot("demo_radiology")
    assert reference.prompts == [training.texts[r] for rows in training.class_prompts for r in rows]
