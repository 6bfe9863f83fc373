"""Text search quality on the 9.6k set: `python -m shoplens evaluate --text-queries`, written into docs/quality.md.

Held-out products (10%, seed 0) query the other 90%, indexed for real: "<colour> <article type>" strings
and their own titles. Usage: python -m benchmarks.text_quality [--render-only]
(--render-only re-renders benchmarks/out/text_eval.json, which a full run writes, without searching again).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.report import write_section

CATALOG = Path("../shared/datasets/fashion-product-images-small")
OUT = Path(__file__).resolve().parent / "out" / "text_eval.json"
QUALITY = Path(__file__).resolve().parent.parent / "docs" / "quality.md"
COMMAND = ("python -m shoplens evaluate ../shared/datasets/fashion-product-images-small --label article_type,colour "
           "--text-queries colour+article_type --text-queries title --json benchmarks/out/text_eval.json")
TARGETS = {"article_type": 0.90, "article_type + colour": 0.60}  # fused search, all queries
MODE_NAMES = {"fused": "**fused** (keyword 2 : semantic 1 : catalog types 8, RRF k=60)", "keyword": "keyword (BM25)",
              "semantic": "semantic (MiniLM)", "bridge": "bridge (MiniLM → image space, ridge)"}


def render(data: dict) -> str:
    labels = data["labels"]
    lines = ["| queries | search | " + " | ".join(f"P@10 {lab}" for lab in labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for kind, modes in data["precision"].items():
        for mode, figures in modes.items():
            lines.append(f"| {kind} ({data['queries'][kind]}) | {MODE_NAMES.get(mode, mode)} | "
                         + " | ".join(f"{figures[lab]:.3f}" for lab in labels) + " |")
    fused = data["precision"].get("all", {}).get("fused", {})
    verdict = ", ".join(f"{lab} {fused.get(lab, float('nan')):.3f} (target ≥ {t:.2f}: "
                        f"{'met' if fused.get(lab, 0) >= t else 'NOT met'})" for lab, t in TARGETS.items())
    return "\n".join([
        "**Secondary figures** (the headline is [text_phrasings](#text_phrasings), shoppers' own words): "
        "\"<colour> <article type>\" queries are built from the very label fields BM25 indexes, so they flatter "
        "keyword search; titles are the catalog's own wording. The fusion was not tuned on these.", "",
        f"{data['held_out']:,} held-out products of the 9.6k set query the other {data['indexed']:,}, indexed by the "
        "real indexer (image vectors, BM25 and MiniLM text vectors, colours, the bridge fitted on the indexed "
        "products only). Each held-out product gives two queries: \"<colour> <article type>\" (\"navy blue "
        "tshirts\") and its own title. Relevant = same article type (and same colour).", "",
        f"**Fused search, both kinds of queries together: {verdict}.**", "", *lines, "",
        f"Indexing {data['seconds_indexing']} s, searching {data['seconds_searching']} s "
        f"(every mode). Command: `{COMMAND}`."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-only", action="store_true", help=f"re-render {OUT} without searching")
    args = parser.parse_args()
    if not args.render_only:
        from shoplens.quality.textevaluate import evaluate_text

        result = evaluate_text(CATALOG, "article_type,colour", [["colour", "article_type"], ["title"]])
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    text = render(json.loads(OUT.read_text()))
    print(text)
    write_section("text_quality", text, QUALITY)


if __name__ == "__main__":
    main()
