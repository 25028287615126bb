"""``python -m domainclip.explain BUNDLE IMAGE [IMAGE ...] --out DIR [--texts TEXT ...] [--base DIR]``

Where the bundle's adapted model looks: for each image (a tile, chip or image file, read as the
run read them) and each class (or each ``--texts`` sentence), a PNG with the image and its
map overlaid, ``DIR/NNNN-KK_class.png`` (NNNN: the image's position on the command line, KK the
class's or text's index, so that look-alike names never share a file),
and ``DIR/explain.json`` listing the inputs, their class probabilities and the files written. A
whole slide or scene is read as the run read it (its tiles or chips, tissue or valid-pixel filter):
the picture is its tiles stitched where they lie, with their maps, and the probabilities are
pooled to the file as ``predict`` pools them. A class's map is, by default, the probability of
the class at each location (``--score probability``); ``--score similarity`` maps the cosine
similarity instead, as ``--texts`` always does.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from domainclip import load_bundle
from domainclip.core.errors import USER_ERRORS, one_line
from domainclip.core.fileio import atomic_write_text
from domainclip.core.names import file_slug
from domainclip.evaluation.overlays import display_image, save_overlay
from domainclip.export.loader import MAP_SCORES, map_score


def explain_to(bundle: str | Path, images: list[str], out: Path, texts: list[str] | None = None,
               base: str | None = None, score: str | None = None) -> dict:
    """Write the overlays of ``images`` into ``out``; return what explain.json holds."""
    score = map_score(texts, score)  # a bad choice is refused before the bundle loads
    predictor = load_bundle(bundle, base=base)
    names = list(texts) if texts else predictor.classes
    out.mkdir(parents=True, exist_ok=True)
    pre = predictor.preprocess
    entries = []
    for i, image in enumerate(images):
        if predictor.whole_file(image):  # a whole slide or scene: its tiles' maps, stitched
            found = predictor.explain_file(image, texts=texts, score=score)
            shown, maps, probs = found["image"], found["maps"], found["probabilities"]
            extra = {"tiles": len(found["cells"])}
        else:
            pixels = predictor._pixels([image])
            maps, probs = predictor.explain(pixels, texts=texts, score=score)[0], predictor.predict(pixels)[0]
            shown, extra = display_image(pixels[0], pre.mean, pre.std), {}
        files = []
        for k, name in enumerate(names):
            path = out / f"{i:04d}-{file_slug(k, name)}.png"
            title = f"{name}" if texts else f"{name}: p = {float(probs[k]):.2f}"
            save_overlay(path, shown, maps[k], title)
            files.append(path.name)
        entries.append({"input": str(image), "probabilities": dict(zip(predictor.classes, map(float, probs))),
                        "maps": dict(zip(names, files)), **extra})
    summary = {"bundle": str(bundle), "maps_of": "texts" if texts else "classes", "score": score, "images": entries}
    atomic_write_text(out / "explain.json", json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m domainclip.explain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--texts", nargs="+", default=None, help="sentences to map instead of the classes")
    ap.add_argument("--score", choices=MAP_SCORES, default=None,
                    help="probability (default for classes) or similarity (the only one for --texts)")
    ap.add_argument("--base", default=None, help="the base model's directory, when this machine did not train it")
    args = ap.parse_args(argv)
    try:
        summary = explain_to(args.bundle, args.images, args.out, args.texts, args.base, args.score)
    except USER_ERRORS as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    n = sum(len(e["maps"]) for e in summary["images"])
    print(f"{n} overlay(s) of {len(summary['images'])} image(s) written to {args.out} (index: explain.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
