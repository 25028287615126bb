"""Reproducing a run from its bundle: ``reproduce.yaml`` (the resolved config, written at export)
names the base model portably, as ``metadata.json`` does, with the weights' digest; a rerun finds
those weights on its own machine and verifies them before anything is built."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from domainclip.export.base_models import _get, portable_config, resolve_base, tower_class

DIGEST_KEY = "base_weights_digest"  # written into reproduce.yaml beside the portable tower config


def reproduce_config(cfg: DictConfig, run_dir: Path, weights_digest: str | None = None) -> str:
    """The resolved config for ``--config-name reproduce``, with every path inside the original run
    directory (checkpoints, sample logs, logger folders) rewritten under the new run's ``run_dir``,
    so reproducing never writes into the run it came from. The base model is named portably, as
    metadata.json names it, with its weights' digest (``received.resolve_reproduced_base``)."""
    original = str(Path(run_dir).resolve())

    def relocate(node):
        if isinstance(node, dict):
            return {k: relocate(v) for k, v in node.items()}
        if isinstance(node, list):
            return [relocate(v) for v in node]
        if isinstance(node, str):
            for prefix in {original, str(run_dir)}:
                if node == prefix or node.startswith(prefix + "/"):
                    return "${run_dir}" + node[len(prefix):]
        return node

    rerun = relocate(OmegaConf.to_container(cfg, resolve=True))
    rerun["run_dir"] = "${hydra:runtime.output_dir}"  # a rerun writes to its own directory
    rerun["tower"] = portable_config(rerun["tower"])  # as metadata.json names the base: no local paths
    if weights_digest:
        rerun[DIGEST_KEY] = weights_digest
    return OmegaConf.to_yaml(OmegaConf.create(rerun))


def resolve_reproduced_base(cfg) -> None:
    """A config reproduced from a bundle names its base model portably (a folder name, as
    metadata.json does) with the weights' digest: find those weights on this machine (a source
    the user passed that exists, else this machine's registry of base models, else the hub
    cache), verify the digest, and put the local paths into ``cfg.tower``. No-op for other configs."""
    digest = cfg.get(DIGEST_KEY)
    if not digest:
        return
    tower = OmegaConf.to_container(cfg.tower, resolve=True)
    given = {k: str(v) for k in tower_class(str(tower["name"])).source_keys
             if (v := _get(tower, k)) and Path(str(v)).expanduser().exists()}
    resolved = resolve_base(Path(str(cfg.run_dir)), {"config": tower, "weights_digest": str(digest)}, base=given or None)
    cfg.tower = OmegaConf.create(resolved)
