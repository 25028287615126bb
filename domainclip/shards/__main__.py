"""``python -m domainclip.shards build CARD out=DIR [size=224] [dtype=float16|uint8] [shard_mb=200] [workers=N]
[resize_mode=squash|shortest|longest] [interpolation=bilinear|bicubic]``
``python -m domainclip.shards verify DIR``: check the manifest and every shard's SHA-256.
"""
from __future__ import annotations

import sys
from pathlib import Path

from domainclip.core.errors import USER_ERRORS, one_line
from domainclip.shards.build import build_shards
from domainclip.shards.manifest import load_manifest

USAGE = __doc__.strip()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] not in ("build", "verify"):
        print(USAGE, file=sys.stderr)
        return 2
    command, target, options = argv[0], argv[1], dict(a.split("=", 1) for a in argv[2:] if "=" in a)
    try:
        if command == "verify":
            manifest = load_manifest(Path(target))
            counts = {s: v["count"] for s, v in manifest["splits"].items()}
            print(f"{target}: {sum(len(v['shards']) for v in manifest['splits'].values())} shards verified, samples {counts}")
            return 0

        if "out" not in options:
            print(USAGE, file=sys.stderr)
            return 2
        manifest = build_shards(target, Path(options["out"]), size=int(options.get("size", 224)),
                                dtype=options.get("dtype", "float16"), shard_mb=float(options.get("shard_mb", 200)),
                                workers=int(options.get("workers", 1)),
                                demo_dir=Path(options["demo_dir"]) if "demo_dir" in options else None,
                                resize_mode=options.get("resize_mode", "squash"),
                                interpolation=options.get("interpolation", "bilinear"))
    except USER_ERRORS as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    shards = sum(len(v["shards"]) for v in manifest["splits"].values())
    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    print(f"{options['out']}: {shards} shards, samples {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
