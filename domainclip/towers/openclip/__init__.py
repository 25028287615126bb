"""Native open_clip checkpoints (``tower=open_clip``): read without open_clip, timm or torchvision,
converted into transformers modules."""
from domainclip.towers.openclip.tower import OpenClipTower

__all__ = ["OpenClipTower"]
