"""Image-text retrieval: R@1/5/10 and mean/median rank, positives = same label set."""
from __future__ import annotations

import torch


def _ranks(sims: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-ranked positive for each query row."""
    order = sims.argsort(dim=1, descending=True)
    hits = positive.gather(1, order)
    return hits.float().argmax(1) + 1


def retrieval_metrics(img: torch.Tensor, txt: torch.Tensor, img_pool: torch.Tensor, txt_pool: torch.Tensor) -> dict:
    """Normalised image and text embeddings with their caption-pool ids (same pool = a match)."""
    sims = img @ txt.t()
    positive = img_pool[:, None] == txt_pool[None, :]
    out = {}
    for name, s, pos in (("image_to_text", sims, positive), ("text_to_image", sims.t(), positive.t())):
        ranks = _ranks(s, pos).float()
        out[name] = {**{f"R@{k}": float((ranks <= k).float().mean()) for k in (1, 5, 10)},
                     "mean_rank": float(ranks.mean()), "median_rank": float(ranks.median())}
    return out


@torch.inference_mode()
def task_retrieval(task, loader) -> dict:
    """Retrieval between each image and its fixed (epoch-0) caption, over one split."""
    was_training = task.training
    task.eval()
    imgs, txts, pools = [], [], []
    for batch in loader:
        imgs.append(task.model.embed_images(batch))
        txts.append(task.text_embeddings(task.pick_captions(batch["pool"], batch["index"], 0)))
        pools.append(batch["pool"])
    task.train(was_training)
    pool = torch.cat(pools)
    return retrieval_metrics(torch.cat(imgs), torch.cat(txts), pool, pool)
