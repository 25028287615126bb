"""Converted open_clip towers against open_clip's own model: the same ViT-B/16 CLIP (random
weights, one seed), saved in open_clip's format and loaded by ``tower=open_clip``, on the same
batch. Two figures, each a ratio of rates measured in this run (best of three after a warm-up):

- forward: images and texts encoded per second (converted / open_clip);
- LoRA step: one training step with LoRA (peft, r=8) on q, k, v and the output projection of every
  attention layer of both sides (open_clip: peft's ``nn.MultiheadAttention`` LoRA on ``attn``;
  converted: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``), CLIP loss, Adam.

The converted tower runs without trimming padding columns here (``trim_padding=False``), so the
figure compares the models, not domainclip's trimming; the trimmed rate is reported as well.
open_clip is imported with the test suite's torchvision stand-in (tests/openclip_oracle.py).

    python benchmarks/towers.py
    python benchmarks/towers.py --smoke

Target: converted / open_clip >= 0.95 for the forward and for the LoRA step.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import best_rate, machine, write_result  # noqa: E402

TEXTS = ["an H&E tile of invasive carcinoma.", "benign stroma with lymphocytes.", "adipose tissue.",
         "necrosis next to tumour cells in a lymph node."]
SMOKE_CFG = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def clip_loss(img, txt, scale):
    import torch
    import torch.nn.functional as F

    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = scale.exp() * img @ txt.T
    target = torch.arange(len(img))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def build_pair(open_clip, args, out: Path):
    """open_clip's model (saved and reloaded as users load it) and the converted tower."""
    import torch
    from openclip_oracle import save_family

    from domainclip.towers import build_tower

    if args.smoke:
        directory = save_family(open_clip, "clip", SMOKE_CFG, out / "tiny")
    else:
        from open_clip.factory import get_model_config

        directory = save_family(open_clip, "clip", get_model_config("ViT-B-16"), out / "vit_b16")
    torch.manual_seed(0)
    ref = open_clip.create_model(f"local-dir:{directory}")
    tower = build_tower({"name": "open_clip", "path": str(directory)})
    tower.trim_padding = False
    return ref, tower, int(tower.preprocess.size)


def forward_rates(ref, tower, pixels, ids, mask, repeats: int) -> dict:
    import torch

    ref.eval(), tower.eval()
    n = len(pixels) + len(ids)

    def theirs():
        with torch.inference_mode():
            ref.encode_image(pixels), ref.encode_text(ids)

    def ours():
        with torch.inference_mode():
            tower.encode_image(pixels), tower.encode_text(ids, mask)

    rates = {"open_clip": best_rate(theirs, n, repeats), "converted": best_rate(ours, n, repeats)}
    tower.trim_padding = True
    rates["converted_trimmed"] = best_rate(ours, n, repeats)
    tower.trim_padding = False
    return rates


def lora_rates(ref, tower, pixels, ids, mask, repeats: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    get_peft_model(ref, LoraConfig(r=8, lora_alpha=16, target_modules=r".*\.attn"))
    base, _ = tower.lora_scope(["image", "text"])
    get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=r".*(vision_model|text_model)\..*(q_proj|k_proj|v_proj|out_proj)"))

    def stepper(model, image, text):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-4)
        model.train()

        def step():
            loss = clip_loss(image(), text(), model.log_logit_scale if hasattr(model, "log_logit_scale") else model.logit_scale)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step, sum(p.numel() for p in params)

    theirs, n_theirs = stepper(ref, lambda: ref.encode_image(pixels), lambda: ref.encode_text(ids))
    ours, n_ours = stepper(tower, lambda: tower.encode_image(pixels), lambda: tower.encode_text(ids, mask))
    return {"open_clip": best_rate(theirs, len(pixels), repeats), "converted": best_rate(ours, len(pixels), repeats),
            "trainable": {"open_clip": n_theirs, "converted": n_ours}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a 2-layer model, one repeat (CI)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import openclip_oracle
    import torch

    torch.set_num_threads(2)
    open_clip = openclip_oracle.install()[0]
    repeats = 1 if args.smoke else 3
    with tempfile.TemporaryDirectory() as tmp:
        ref, tower, size = build_pair(open_clip, args, Path(tmp))
        pixels = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        tok = tower.tokenize([TEXTS[i % len(TEXTS)] for i in range(args.batch)])
        forward = forward_rates(ref, tower, pixels, tok["input_ids"], tok["attention_mask"], repeats)
        lora = lora_rates(ref, tower, pixels, tok["input_ids"], tok["attention_mask"], repeats)
    result = {"model": "tiny (smoke)" if args.smoke else "ViT-B-16", "batch": args.batch,
              "forward": {**forward, "ratio": forward["converted"] / forward["open_clip"]},
              "lora_step": {**lora, "ratio": lora["converted"] / lora["open_clip"]}}
    path = write_result("towers", result, args.out)
    print(f"{machine()}: {result['model']}, batch {args.batch}")
    print(f"forward: converted {forward['converted']:.1f}/s, open_clip {forward['open_clip']:.1f}/s, "
          f"ratio {result['forward']['ratio']:.3f} (target >= 0.95); trimmed padding {forward['converted_trimmed']:.1f}/s")
    print(f"LoRA step: converted {lora['converted']:.2f} samples/s, open_clip {lora['open_clip']:.2f} samples/s, "
          f"ratio {result['lora_step']['ratio']:.3f} (target >= 0.95)")
    print(f"written {path}")


if __name__ == "__main__":
    main()
