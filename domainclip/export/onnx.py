"""ONNX export of the image side (input adapter, encoder with any LoRA merged, projection)."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from domainclip.core.errors import BundleError

ONNX_FILE = "image_encoder.onnx"


class ImageEmbedder(nn.Module):
    """Pixels (B, C, S, S), normalised as in ``metadata.preprocessing`` -> L2-normalised embeddings."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.embed_images(pixels)


def _merged_copy(model) -> nn.Module:
    from peft.tuners.lora import LoraLayer

    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.merge()
    return model


def write_onnx(adapted, out_dir: Path, atol: float = 1e-4) -> list[str]:
    """Export, then check onnxruntime against PyTorch on random input; returns the file written."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BundleError("export.onnx=true needs onnx and onnxruntime: pip install 'domainclip[onnx]'") from exc
    model = ImageEmbedder(_merged_copy(adapted))
    pre = adapted.tower.preprocess
    channels = adapted.input_adapter.proj.in_channels if adapted.input_adapter is not None else 3
    example = torch.randn(2, channels, pre.size, pre.size, generator=torch.Generator().manual_seed(0))
    path = Path(out_dir) / ONNX_FILE
    torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["pixels"], output_names=["embedding"],
                      dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}})
    with torch.inference_mode():
        expected = model(example).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixels": example.numpy()})[0]
    err = float(abs(got - expected).max())
    if err > atol:
        raise BundleError(f"ONNX output differs from PyTorch by {err:.2e} (> {atol}); not exporting ONNX")
    return [ONNX_FILE]
