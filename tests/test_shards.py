"""WebDataset shards: build from the demo cards, train from them, exact streaming across ranks,
resume, tamper and rebuild checks."""
from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from domainclip.shards import ShardError, ShardStream, build_shards, load_manifest


@pytest.fixture(scope="module")
def pathology_shards(tmp_path_factory, _cache):
    out = tmp_path_factory.mktemp("shards-pathology")
    build_shards("demo_pathology", out, size=64, shard_mb=1, workers=2)
    return out


def samples(directory):
    """Every (split, index, info) stored in a shard set, read back with tarfile."""
    out = []
    for tar in sorted(directory.glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    info = json.loads(t.extractfile(m).read())
                    out.append((info["split"], info["index"], info))
    return out


@pytest.mark.parametrize("card, size", [("demo_radiology", 64), ("demo_satellite", 64)])
def test_build_from_demo_cards_keeps_counts_and_no_identifiers(card, size, tmp_path):
    from domainclip.data import load_card_data
    from domainclip.export.phi import identifying_values

    manifest = build_shards(card, tmp_path, size=size, shard_mb=1)
    data = load_card_data(card)
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {s: len(r) for s, r in data.splits.items()}
    stored = samples(tmp_path)
    assert Counter(s for s, _, _ in stored) == Counter({s: len(r) for s, r in data.splits.items()})
    info = stored[0][2]
    assert set(info) == {"index", "labels", "group", "split", "captions", "meta"} and info["captions"]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("*.tar"))
    for value in identifying_values(data):  # PHI: patient ids, DICOM identifiers, paths never stored
        assert value.encode() not in raw, value
    assert str(data.root).encode() not in raw
    with tarfile.open(next(tmp_path.glob("train-*.tar"))) as t:
        npy = next(m for m in t.getmembers() if m.name.endswith(".npy"))
        import numpy as np

        arr = np.load(io.BytesIO(t.extractfile(npy).read()))
    assert arr.dtype == np.float16 and arr.shape == (3, size, size)


def run_metrics(make_cfg, tmp_path, name, *extra):
    from domainclip.pipeline.run import run

    cfg = make_cfg("recipe=pathology", "tower.image.size=64", "trainer.max_epochs=2", "eval.bootstrap=0",
                   "export.enabled=false", "trainer.enable_progress_bar=false", *extra)
    cfg.run_dir = str(tmp_path / name)
    cfg.data.feature_cache_dir = str(tmp_path / f"features-{name}")
    return run(cfg).metrics


@pytest.fixture
def one_thread():
    """One thread for torch and the BLAS libraries (the linear probe's fit), as every xdist worker
    has: which borderline image float16 storage moves depends on the reduction order, so ``-n 0``
    on a many-core machine compares the same sums."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.mark.timeout(900)  # a hang guard: >= 10x the test's duration on a slow 2-core machine
@pytest.mark.parametrize("method", ["lora", "linear_probe"])
def test_training_on_shards_matches_training_on_files(method, make_cfg, tmp_path, pathology_shards, one_thread):
    files = run_metrics(make_cfg, tmp_path, "files", f"method={method}")
    shards = run_metrics(make_cfg, tmp_path, "shards", f"method={method}", "data.source=shards",
                         f"data.shards={pathology_shards}")
    for split in ("val", "test"):
        a, b = files["zero_shot_after"][split], shards["zero_shot_after"][split]
        # pixels are stored as float16: on a demo that does not saturate, at most one borderline image
        # of the split may land on the other side of a decision boundary
        assert abs(a["top1"] - b["top1"]) <= 1 / a["n"] + 1e-9
        assert abs(a["macro_auroc"] - b["macro_auroc"]) < 5e-3
    assert files["zero_shot_before"]["test"]["top1"] == shards["zero_shot_before"]["test"]["top1"]


def stream(directory, split="train", **kw):
    manifest = load_manifest(directory, verify=False)
    return ShardStream(directory, manifest, split, (0.5,) * 3, (0.5,) * 3, 4, seed=3, shuffle=True, buffer=16,
                       batch_size=8, **kw)


def ids_of(ds, workers):
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=workers)
    return [b["index"][b["valid"]].tolist() for b in loader]


def rank_worker(rank, init, directory, out):
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2)
    result = {}
    for epoch in (0, 1):
        ds = stream(directory, num_workers=2, split_by_rank=True)
        ds.set_epoch(epoch)
        result[epoch] = ids_of(ds, workers=2)
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.timeout(900)  # a hang guard, not a deadline: > 30x the test's duration on a slow 2-core machine
def test_two_ranks_two_workers_see_each_sample_once_per_epoch(pathology_shards, tmp_path):
    mp.spawn(rank_worker, args=(str(tmp_path / "init"), pathology_shards, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for epoch in (0, 1):
        assert len(ranks[0][epoch]) == len(ranks[1][epoch])  # equal batch counts: no DDP hang
        seen = Counter(i for r in ranks for batch in r[epoch] for i in batch)
        assert sorted(seen) == list(range(160)) and set(seen.values()) == {1}
    assert ranks[0][0] != ranks[0][1]  # reshuffled per epoch (shard order + buffer)


def test_stream_is_seeded_and_resumes_mid_epoch(pathology_shards):
    full = ids_of(stream(pathology_shards), workers=0)
    assert full == ids_of(stream(pathology_shards), workers=0)
    resumed = stream(pathology_shards)
    resumed.resume_at(0, 5 * 8)  # 5 batches consumed before the interruption
    assert ids_of(resumed, workers=0) == full[5:]


def test_tampered_shard_and_other_card_are_refused(pathology_shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(pathology_shards, copy)
    victim = sorted(copy.glob("train-*.tar"))[1]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match=f"{victim.name}: checksum mismatch.*rebuild with: python -m domainclip.shards build"):
        load_manifest(copy)
    with pytest.raises(ShardError, match="another version of the data card"):
        load_manifest(pathology_shards, card_digest="0" * 64)
    with pytest.raises(ShardError, match="reader/transform settings"):
        load_manifest(pathology_shards, transform="0" * 64)


def test_interrupted_build_resumes_without_duplicates(tmp_path):
    build_shards("demo_radiology", tmp_path, size=32, shard_mb=0.2)
    tars = sorted(tmp_path.glob("*.tar"))
    kept = {t.name: t.stat().st_mtime_ns for t in tars[::2]}
    for t in tars[1::2]:
        t.unlink()  # as if the build died before these shards were written
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "train-00000.tar.tmp").write_bytes(b"half a shard")  # a write cut short
    with pytest.raises(ShardError, match="no manifest.json"):
        load_manifest(tmp_path)
    manifest = build_shards("demo_radiology", tmp_path, size=32, shard_mb=0.2)
    assert {t.name: t.stat().st_mtime_ns for t in sorted(tmp_path.glob("*.tar"))[::2]} == kept  # not rebuilt
    stored = Counter((s, i) for s, i, _ in samples(tmp_path))
    assert set(stored.values()) == {1}
    assert len(stored) == sum(v["count"] for v in manifest["splits"].values())
    load_manifest(tmp_path)  # checksums of old and new shards verify


def test_a_non_default_resize_changes_the_transform_digest_and_the_default_does_not():
    from domainclip.shards.manifest import transform_digest

    args = ("png", {}, {}, 224, "float16")
    assert transform_digest(*args) == transform_digest(*args, "squash/bilinear")  # earlier shard sets still match
    assert transform_digest(*args, "shortest/bicubic") != transform_digest(*args)
