"""Export a CLIP or SigLIP checkpoint from the Hugging Face hub to a shoplens model folder (`--encoder onnx:DIR`).

Run it once on a machine with internet, then copy DIR to the shop's machine:

    pip install "transformers==5.25.0" torch==2.13.0 tokenizers sentencepiece
    python scripts/export_onnx_model.py clip-vit-b32 models/clip-vit-b32
    python scripts/export_onnx_model.py siglip2-base-224 models/siglip2-base-224
    python scripts/export_onnx_model.py --hub-id openai/clip-vit-large-patch14 --family clip models/clip-vit-l14

DIR gets image.onnx, text.onnx, tokenizer.json and shoplens-model.json. Without internet it stops at once with
one `error:` line. `--random-weights` builds the same architecture from its default configuration with random
weights and a stand-in tokenizer, offline: its vectors mean nothing, but its size and speed are the real model's
(benchmarks/onnx_model.py times it).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import warnings
from pathlib import Path

HUB = "huggingface.co"
# name -> (hub id, family, size, mean, std, fit, max_length, licence)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
KNOWN = {
    "clip-vit-b32": ("openai/clip-vit-base-patch32", "clip", 224, CLIP_MEAN, CLIP_STD, "crop", 77, "MIT"),
    "clip-vit-b16": ("openai/clip-vit-base-patch16", "clip", 224, CLIP_MEAN, CLIP_STD, "crop", 77, "MIT"),
    "siglip2-base-224": ("google/siglip2-base-patch16-224", "siglip", 224, [0.5] * 3, [0.5] * 3, "pad", 64,
                         "Apache-2.0"),
    "siglip2-base-256": ("google/siglip2-base-patch16-256", "siglip", 256, [0.5] * 3, [0.5] * 3, "pad", 64,
                         "Apache-2.0"),
}


class ExportError(RuntimeError):
    """A step a user can fix (no internet, a wrong hub id, a missing package)."""


def check_online(host: str = HUB, timeout: float = 5.0) -> None:
    """Fail in seconds, not after the hub client's retries, when the hub cannot be reached."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        raise ExportError(f"cannot reach {host} ({exc}): run this script on a machine with internet, then copy "
                          "the folder it writes to the shop's machine") from None


def features(out):
    """transformers 4 returns the projected features as a tensor; transformers 5 in `pooler_output`."""
    return out if hasattr(out, "shape") else out.pooler_output


def load(hub_id: str, family: str, random_weights: bool):
    """(model, tokenizers.Tokenizer or None) for the checkpoint, or its architecture with random weights."""
    import transformers

    if random_weights:
        config = transformers.CLIPConfig() if family == "clip" else transformers.SiglipConfig()
        model = (transformers.CLIPModel if family == "clip" else transformers.SiglipModel)(config)
        return model.eval(), stand_in_tokenizer(model.config.text_config.vocab_size)
    check_online()
    try:
        model = transformers.AutoModel.from_pretrained(hub_id, attn_implementation="eager").eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(hub_id)
    except OSError as exc:
        raise ExportError(f"cannot load {hub_id} from the hub: {exc}") from None
    from tokenizers import Tokenizer

    # A fast tokenizer wraps a tokenizers.Tokenizer (saved as tokenizer.json); a SentencePiece-only one (SigLIP v1)
    # has none, and the folder then gets the image model alone.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return model, backend if isinstance(backend, Tokenizer) else None


def stand_in_tokenizer(vocab_size: int):
    """A word-level tokenizer over made-up words, for --random-weights (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, min(vocab_size, 1000))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def export(model, family: str, size: int, max_length: int, out: Path) -> tuple[int, bool]:
    """Write out/image.onnx and out/text.onnx; (D, whether the text model takes attention_mask)."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, pixel_values):
            return features(self.net.get_image_features(pixel_values=pixel_values))

    # CLIP pools at the end token and needs the mask for batches of mixed length; SigLIP was trained on texts
    # padded to 64 tokens and takes none (shoplens then pads every text to max_length).
    with_mask = family == "clip"

    class TextTower(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, input_ids, attention_mask=None):
            return features(self.net.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    pixels = torch.zeros(1, 3, size, size)
    ids = torch.ones(2, max_length, dtype=torch.int64)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        dim = int(ImageTower(model)(pixels).shape[1])
        torch.onnx.export(ImageTower(model), (pixels,), str(out / "image.onnx"), input_names=["pixel_values"],
                          output_names=["image_embeds"],
                          dynamic_axes={"pixel_values": {0: "n"}, "image_embeds": {0: "n"}}, opset_version=17,
                          dynamo=False)
        args, names = ((ids, torch.ones_like(ids)), ["input_ids", "attention_mask"]) if with_mask else ((ids,),
                                                                                                     ["input_ids"])
        axes = {name: {0: "n", 1: "l"} for name in names}
        torch.onnx.export(TextTower(model), args, str(out / "text.onnx"), input_names=names,
                          output_names=["text_embeds"], dynamic_axes={**axes, "text_embeds": {0: "n"}},
                          opset_version=17, dynamo=False)
    return dim, with_mask


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help=f"one of {', '.join(KNOWN)}, or a name for --hub-id")
    ap.add_argument("out", type=Path, help="the model folder to write (DIR of --encoder onnx:DIR)")
    ap.add_argument("--hub-id", default=None, help="another checkpoint of the same family (give --family too)")
    ap.add_argument("--family", choices=["clip", "siglip"], default=None)
    ap.add_argument("--size", type=int, default=None, help="input size (default: the checkpoint's)")
    ap.add_argument("--random-weights", action="store_true",
                    help="offline: the architecture with random weights (for timing, not for search)")
    args = ap.parse_args(argv)
    try:
        if args.model in KNOWN and not args.hub_id:
            hub_id, family, size, mean, std, fit, max_length, licence = KNOWN[args.model]
        elif args.hub_id and args.family:
            hub_id, family, licence = args.hub_id, args.family, "see the model card of " + args.hub_id
            size, fit, max_length = 224, ("crop" if family == "clip" else "pad"), (77 if family == "clip" else 64)
            mean, std = (CLIP_MEAN, CLIP_STD) if family == "clip" else ([0.5] * 3, [0.5] * 3)
        else:
            raise ExportError(f"unknown model {args.model!r}: pick one of {', '.join(KNOWN)}, or give --hub-id "
                              "and --family")
        size = args.size or size
        if not args.random_weights:
            check_online()  # before the slow imports: offline, the answer comes in seconds
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            raise ExportError(f"exporting needs torch and transformers ({exc}): pip install "
                              "transformers==5.25.0 torch==2.13.0 tokenizers sentencepiece") from None
        model, tokenizer = load(hub_id, family, args.random_weights)
        if args.random_weights:
            size = model.config.vision_config.image_size
        args.out.mkdir(parents=True, exist_ok=True)
        dim, _ = export(model, family, size, max_length, args.out)
        spec = {"name": ("random-" if args.random_weights else "") + args.model, "image": "image.onnx",
                "size": size, "mean": mean, "std": std, "fit": fit,
                "licence": "random weights: for timing only" if args.random_weights else licence}
        if tokenizer is not None:
            tokenizer.save(str(args.out / "tokenizer.json"))
            spec.update(text="text.onnx", tokenizer="tokenizer.json", max_length=max_length)
        else:
            (args.out / "text.onnx").unlink()
            print(f"note: {hub_id} has no Hugging Face tokenizers file: the folder has the image model only",
                  file=sys.stderr)
        (args.out / "shoplens-model.json").write_text(json.dumps(spec, indent=2) + "\n")
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({dim}-d): use it with --encoder onnx:{args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
