"""Preprocessed, sharded, streaming datasets in WebDataset format (``python -m domainclip.shards``)."""
from domainclip.shards.build import build_shards
from domainclip.shards.dataset import ShardStream
from domainclip.shards.manifest import ShardError, load_manifest

__all__ = ["ShardError", "ShardStream", "build_shards", "load_manifest"]
