"""Every (tower x method) case, in the style of peft's test tables: only the intended parameters
train, a few steps reduce the loss on a separable toy set, and save/reload gives identical outputs."""
from __future__ import annotations

import re

import pytest
import torch

from domainclip.model import AdaptedModel
from domainclip.towers import build_tower
from domainclip.training.task import ContrastiveTask

CLASSES = ["red", "green", "blue", "grey"]
COLOURS = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [0, 0, 0]])
CAPTIONS = [t.format(c) for c in CLASSES for t in ("a photo of {}.", "a {} image.")]
POOLS = [[2 * k, 2 * k + 1] for k in range(len(CLASSES))]

HEADS = r"(log_logit_scale|logit_bias|image_proj|text_proj|visual_projection|text_projection)"
TRAINABLE = {
    "zero_shot": None,
    "linear_probe": None,
    "lora": r"lora_",
    "coop": r"prompt_learner\.",
    "cocoop": r"prompt_learner\.",
    "vpt": r"visual_prompts\.",
    "full": r"(encoder|model)\.",
    "wise_ft": r"lora_",
}
CASES = [
    ("embedded", "zero_shot", {}), ("embedded", "linear_probe", {}), ("embedded", "lora", {"sides": ["text"]}),
    ("embedded", "coop", {}), ("embedded", "cocoop", {}), ("embedded", "vpt", {"pad": 8}), ("embedded", "full", {"unlocked_layers": 1, "lr": 1e-3}),
    ("embedded", "wise_ft", {"inner": "lora", "inner_options": {"sides": ["text"]}}),
    ("clip", "lora", {"sides": ["image", "text"]}), ("clip", "coop", {"class_specific": True}), ("clip", "cocoop", {}),
    ("clip", "vpt", {"train_heads": True}), ("clip", "full", {"lr": 1e-3}), ("clip", "linear_probe", {}),
    ("siglip", "lora", {"sides": ["text"], "train_heads": True}), ("siglip", "vpt", {}), ("siglip", "full", {"lr": 1e-3}),
    ("clip", "zero_shot", {}), ("clip", "wise_ft", {"inner": "lora", "inner_options": {"sides": ["text"]}}),
    ("siglip", "zero_shot", {}), ("siglip", "linear_probe", {}), ("siglip", "coop", {"lr": 2e-3}),
    ("siglip", "cocoop", {"lr": 2e-3}), ("siglip", "wise_ft", {"inner": "lora", "inner_options": {"sides": ["text"]}}),
]


def tower_cfg(kind, tiny_clip_dir, tiny_siglip_dir) -> dict:
    return {"embedded": {"name": "two_tower", "image": {"size": 64}},
            "clip": {"name": "hf_clip", "path": str(tiny_clip_dir)},
            "siglip": {"name": "hf_siglip", "path": str(tiny_siglip_dir)}}[kind]


def toy_batch(size: int, n: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    pixels = COLOURS[labels][:, :, None, None] + 0.3 * torch.randn(n, 3, size, size, generator=g)
    return {"pixels": pixels, "label": labels, "index": torch.arange(n), "pool": labels}


def make_task(tower: dict, method: dict, loss: str = "clip") -> ContrastiveTask:
    torch.manual_seed(0)
    return ContrastiveTask(tower=tower, method=method, loss={"name": loss}, captions=CAPTIONS, pools=POOLS,
                           class_prompts=POOLS, class_names=CLASSES)


@pytest.mark.parametrize("kind, method, extra", CASES, ids=[f"{k}-{m}" for k, m, _ in CASES])
def test_method_case(kind, method, extra, tiny_clip_dir, tiny_siglip_dir, tmp_path):
    tcfg = tower_cfg(kind, tiny_clip_dir, tiny_siglip_dir)
    check_method(tcfg, method, extra, "siglip" if kind == "siglip" else "clip", tmp_path)


# every method on each open_clip family (native loader): one tiny random checkpoint per family
OPEN_CLIP_CASES = [(f, m, e) for f in ("clip", "timm_hf", "coca") for m, e in (
    ("zero_shot", {}), ("linear_probe", {}), ("lora", {"sides": ["image", "text"]}), ("coop", {"lr": 2e-3}),
    ("cocoop", {"lr": 2e-3}),
    ("vpt", {}), ("full", {"lr": 1e-3}), ("wise_ft", {"inner": "lora", "inner_options": {"sides": ["text"]}}))]


@pytest.mark.parametrize("family, method, extra", OPEN_CLIP_CASES, ids=[f"open_clip-{f}-{m}" for f, m, _ in OPEN_CLIP_CASES])
def test_method_on_each_open_clip_family(family, method, extra, open_clip_dirs, tmp_path):
    check_method({"name": "open_clip", "path": str(open_clip_dirs[family])}, method, extra, "clip", tmp_path)


def eval_loss(task, batch) -> float:
    task.eval()
    with torch.no_grad():
        return task.loss(batch, 0).item()


def check_method(tcfg: dict, method: str, extra: dict, loss: str, tmp_path) -> None:
    """Only the intended parameters train, a few steps lower the loss, save/reload is identical."""
    mcfg = {"name": method, **extra}
    task = make_task(tcfg, mcfg, loss=loss)
    size = task.tower.preprocess.size

    # 1. only the intended parameters train
    trainable = [n for n, p in task.named_parameters() if p.requires_grad]
    pattern = TRAINABLE[method]
    if pattern is None:
        assert trainable == []
    else:
        assert trainable, "nothing trains"
        assert all(re.search(pattern, n) or re.search(HEADS, n) for n in trainable), trainable
        assert any(re.search(pattern, n) for n in trainable)

    # 2. a few steps reduce the loss on a separable toy set (the probe fits it in closed form)
    batch = toy_batch(size)
    if method == "linear_probe":
        from domainclip.data import FeatureDataset
        from domainclip.data.datamodule import SplitDataModule
        from domainclip.pipeline.objectives import Adaptation, adapt

        with torch.no_grad():
            feats = task.tower.image_features(batch["pixels"])
        ds = FeatureDataset(feats, batch["label"])
        report = adapt(Adaptation(task, SplitDataModule({"train": ds, "val": ds}, batch_size=8), None))
        assert max(report["val_top1_by_C"].values()) == 1.0
    elif pattern is not None:
        opt = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=extra.get("lr", 1e-2))
        first = eval_loss(task, batch)  # measured without dropout, so that the comparison is deterministic
        task.train()
        for _ in range(8):
            opt.zero_grad()
            task.loss(batch, 0).backward()
            opt.step()
        assert eval_loss(task, batch) < first

    # 3. save and reload give identical outputs (AdaptedModel.load(model.save(d)), to 1e-6)
    task.eval()
    loaded = AdaptedModel.load(task.model.save(tmp_path / "model"))
    with torch.no_grad():
        torch.testing.assert_close(task.model.logits(batch), loaded.logits(batch), atol=1e-6, rtol=1e-6)
        tok = task.tower.tokenize(["a red image."])
        torch.testing.assert_close(task.tower.encode_text(**tok), loaded.tower.encode_text(**tok), atol=1e-6, rtol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert set(loaded.trainable_state()) == set(task.model.trainable_state())


def test_vpt_on_a_cnn_uses_padding_prompts_only_on_the_border():
    from domainclip.methods.vpt import PaddingPrompts

    task = make_task({"name": "two_tower", "image": {"size": 64}}, {"name": "vpt", "pad": 8})
    prompts = task.model.adapters["visual_prompts"]
    assert isinstance(prompts, PaddingPrompts)
    with torch.no_grad():
        prompts.tokens.fill_(1.0)
    seen = []
    hook = task.tower.image_encoder.net._conv_stem.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    task.tower.image_features(torch.zeros(1, 3, 64, 64))
    hook.remove()
    assert seen[0][0, :, 8:56, 8:56].abs().max() == 0 and seen[0][0, :, :8].min() == 1.0


def test_wise_ft_sweeps_alphas_and_reports_retention(make_cfg, tiny_tower):
    from domainclip.pipeline.run import run

    result = run(make_cfg("recipe=pathology", *tiny_tower, "method=wise_ft", "method.reference_card=demo_satellite",
                          "method.alphas=[0.0,0.5,1.0]", "trainer.max_epochs=2",
                          "export.enabled=false", "trainer.enable_progress_bar=false"))
    report = result.metrics["method"]
    assert set(report["sweep"]) == {"0.0", "0.5", "1.0"} and report["alpha"] in (0.0, 0.5, 1.0)
    assert report["sweep"]["0.0"]["val"] == result.metrics["zero_shot_before"]["val"]["top1"]
    assert report["retained_zero_shot"]["0.0"] == 1.0
    chosen = report["sweep"][str(report["alpha"])]
    assert chosen["test"] == result.metrics["zero_shot_after"]["test"]["top1"]


def tower_attributes(tower) -> dict:
    """The tower's own attribute names: plain attributes, submodules, parameters and buffers."""
    return {"vars": sorted(vars(tower)), **{k: sorted(getattr(tower, k)) for k in ("_modules", "_parameters", "_buffers")}}


@pytest.mark.parametrize("kind, method, extra", CASES, ids=[f"{k}-{m}" for k, m, _ in CASES])
def test_prepare_adds_no_attribute_to_the_tower(kind, method, extra, tiny_clip_dir, tiny_siglip_dir):
    tcfg = tower_cfg(kind, tiny_clip_dir, tiny_siglip_dir)
    expected = tower_attributes(build_tower(tcfg))
    model = AdaptedModel.build(tcfg, {"name": method, **extra}, CLASSES, CAPTIONS, [k for k in range(4) for _ in "ab"],
                               input_adapter={"in_channels": 4, "init": [3, 0, 1]})
    assert tower_attributes(model.tower) == expected
    assert "input_adapter" in model.adapters
    assert not any(n.startswith("tower.") and "input_adapter" in n for n, _ in model.named_parameters())
