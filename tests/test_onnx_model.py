"""Bring your own weights (`--encoder onnx:DIR`): a small model built here with torch, exported to ONNX, indexed
and searched end to end; its vectors checked against NumPy arithmetic on the torch weights; every bad folder
refused in one line with nothing written. Nothing downloads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shoplens.cli import main

torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")

SIZE = 16
DIM = 6
MEAN = [0.4, 0.5, 0.6]
STD = [0.2, 0.25, 0.3]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "white": (245, 245, 245), "purple": (130, 30, 160)}
VOCAB = ["[PAD]", "[UNK]", *COLOURS, "bag", "shoe"]


class ImageNet(torch.nn.Module):
    """conv 3x3 -> ReLU -> global mean -> linear: small, but every part of the arithmetic matters."""

    def __init__(self, out_dim: int = DIM):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.linear = torch.nn.Linear(4, out_dim)

    def forward(self, x):
        return self.linear(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class TextNet(torch.nn.Module):
    """Word vectors averaged over the words the attention mask keeps."""

    def __init__(self, rows: np.ndarray):
        super().__init__()
        self.emb = torch.nn.Embedding(*rows.shape)
        with torch.no_grad():
            self.emb.weight.copy_(torch.from_numpy(rows))

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        return (self.emb(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class NanNet(torch.nn.Module):
    def forward(self, x):
        return torch.log(-torch.ones_like(x.mean(dim=(2, 3))))  # log of -1: NaN for every photo


def export(module, args, path: Path, names, dynamic) -> Path:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), input_names=names, output_names=["out"],
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return path


def export_image(module, path: Path, size: int = SIZE) -> Path:
    return export(module, (torch.zeros(1, 3, size, size),), path, ["pixels"], {"pixels": {0: "n"}, "out": {0: "n"}})


def export_text(module, path: Path) -> Path:
    ids = torch.ones(2, 3, dtype=torch.int64)
    return export(module, (ids, ids), path, ["input_ids", "attention_mask"],
                  {"input_ids": {0: "n", 1: "l"}, "attention_mask": {0: "n", 1: "l"}, "out": {0: "n"}})


def save_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def photo_pixels(name: str) -> np.ndarray:
    """A SIZE x SIZE photo: its colour, with a white 4x4 patch placed by the name (so the conv sees an edge)."""
    arr = np.empty((SIZE, SIZE, 3), np.uint8)
    arr[:] = COLOURS[name]
    at = 2 * (list(COLOURS).index(name) % 5)
    arr[at:at + 4, at + 1:at + 5] = (255, 255, 255) if name != "white" else (0, 0, 0)
    return arr


def reference(weights: dict, pixels: list[np.ndarray]) -> np.ndarray:
    """The image model by hand in NumPy from the torch weights: normalise, conv 3x3 (zero padding), ReLU,
    mean, linear, L2-normalise."""
    x = np.stack([(p.astype(np.float64) / 255.0 - MEAN) / STD for p in pixels]).transpose(0, 3, 1, 2)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    w, b = weights["conv.weight"].astype(np.float64), weights["conv.bias"].astype(np.float64)
    conv = np.zeros((x.shape[0], w.shape[0], SIZE, SIZE))
    for ki in range(3):
        for kj in range(3):
            conv += np.einsum("ncij,oc->noij", padded[:, :, ki:ki + SIZE, kj:kj + SIZE], w[:, :, ki, kj])
    conv += b[None, :, None, None]
    pooled = np.maximum(conv, 0).mean(axis=(2, 3))
    out = pooled @ weights["linear.weight"].astype(np.float64).T + weights["linear.bias"]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def write_folder(folder: Path, image: Path | None = None, text: Path | None = None, tokenizer: Path | None = None,
                 **fields) -> Path:
    """A model folder: the given files copied in and shoplens-model.json (fields override the defaults)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"name": "test-model", "image": "image.onnx", "size": SIZE, "mean": MEAN, "std": STD, "fit": "crop",
            "licence": "test only"}
    if image is not None:
        shutil.copy(image, folder / "image.onnx")
    if text is not None:
        shutil.copy(text, folder / "text.onnx")
        spec.update(text="text.onnx", tokenizer="tokenizer.json", max_length=8)
    if tokenizer is not None:
        shutil.copy(tokenizer, folder / "tokenizer.json")
    spec.update(fields)
    (folder / "shoplens-model.json").write_text(json.dumps({k: v for k, v in spec.items() if v is not None}))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The exported files: image model, a matching text model, a text model of another D, a NaN model, tokenizer."""
    base = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    net = ImageNet()
    weights = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    # Each colour word's vector is that colour's photo's vector: "red" reaches the red photo through the text model.
    rows = np.random.default_rng(1).normal(size=(len(VOCAB), DIM)).astype(np.float32)
    for name in COLOURS:
        rows[VOCAB.index(name)] = reference(weights, [photo_pixels(name)])[0]
    torch.manual_seed(2)
    return {"weights": weights,
            "image": export_image(net, base / "image.onnx"),
            "image16x2": export_image(ImageNet(), base / "image-other.onnx"),
            "text": export_text(TextNet(rows), base / "text.onnx"),
            "text_other_dim": export_text(TextNet(rows[:, :DIM - 1].copy()), base / "text5.onnx"),
            "nan": export_image(NanNet(), base / "nan.onnx"),
            "rank3": export(Rank3(), (torch.zeros(1, 3, SIZE, SIZE),), base / "rank3.onnx", ["pixels"],
                            {"pixels": {0: "n"}, "out": {0: "n"}}),
            "tokenizer": save_tokenizer(base / "tokenizer.json")}


class Rank3(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=3)  # [N, 3, SIZE]: not [N, D]


@pytest.fixture
def catalog(tmp_path) -> Path:
    root = tmp_path / "catalog"
    for i, name in enumerate(COLOURS):
        path = root / ("warm" if i % 2 else "cool") / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo_pixels(name)).save(path)
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache of its own: vectors are computed, not read from another test's embeddings."""
    from conftest import fresh_cache

    path = fresh_cache(tmp_path / "cache")
    monkeypatch.setenv("SHOPLENS_CACHE", str(path))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def index(capsys, catalog, index_dir, folder, *extra):
    return run(capsys, "index", catalog, "--index", index_dir, "--encoder", f"onnx:{folder}", "--quiet", "--json",
               *extra)


def test_index_search_and_vectors_equal_numpy(models, catalog, tmp_path, cache, capsys):
    folder = write_folder(tmp_path / "model", models["image"], models["text"], models["tokenizer"])
    code, out, err = index(capsys, catalog, tmp_path / "index", folder, "--text", "off")
    assert code == 0 and json.loads(out)["added"] == len(COLOURS), err
    assert "runs on onnxruntime's CPUExecutionProvider" in err  # the one line that says which provider ran

    from shoplens.store import open_store

    with open_store(tmp_path / "index") as store:
        meta = store.read_meta()
        hits = {h.payload["title"]: h.vector for h in store.iterate(with_vector=True)}
    assert meta["encoder"] == f"onnx:{folder.resolve()}" and meta["dim"] == DIM
    assert meta["onnx_model"]["name"] == "test-model" and meta["onnx_model"]["dim"] == DIM
    assert meta["encoder_version"].startswith("test-model-") and len(meta["onnx_model"]["digest"]) == 64
    names = sorted(COLOURS)
    expected = reference(models["weights"], [photo_pixels(n) for n in names])
    got = np.stack([np.asarray(hits[n], np.float64) for n in names])
    np.testing.assert_allclose(got, expected, atol=1e-5)

    # Every catalog photo finds itself first.
    for i, name in enumerate(COLOURS):
        photo = catalog / ("warm" if i % 2 else "cool") / f"{name}.png"
        code, out, err = run(capsys, "search", photo, "--index", tmp_path / "index", "-k", "3", "--json")
        assert code == 0, err
        first = json.loads(out)["results"][0]
        assert (first["title"], first["similarity"]) == (name, pytest.approx(1.0, abs=1e-5))


def test_words_reach_the_photos_through_the_text_model(models, catalog, tmp_path, cache, capsys):
    folder = write_folder(tmp_path / "model", models["image"], models["text"], models["tokenizer"])
    assert index(capsys, catalog, tmp_path / "index", folder, "--text", "off")[0] == 0
    # No sentence vectors in this index: words are searched only through the model's text tower.
    for name in COLOURS:
        code, out, err = run(capsys, "search", "--text", f"{name.upper()}", "--index", tmp_path / "index", "-k", "1",
                             "--json", "--mode", "fused")
        assert code == 0, err
        assert json.loads(out)["results"][0]["title"] == name


def test_text_tower_is_fused_with_keywords_and_minilm(models, catalog, tmp_path, cache, capsys):
    from shoplens.query.hybrid import ranked_lists
    from shoplens.query.search import Searcher

    folder = write_folder(tmp_path / "model", models["image"], models["text"], models["tokenizer"])
    assert index(capsys, catalog, tmp_path / "index", folder)[0] == 0  # titles: BM25 + MiniLM vectors too
    searcher = Searcher.open(tmp_path / "index")
    try:
        lists = ranked_lists(searcher.text_side, "purple", 3)
        assert {"keyword", "semantic", "imagebind"} <= set(lists)
        assert lists["imagebind"][0].payload["title"] == "purple"
        assert searcher.search_text("purple", k=1).hits[0].payload["title"] == "purple"
    finally:
        searcher.close()


def test_without_a_text_model_words_search_works_as_before(models, catalog, tmp_path, cache, capsys):
    from shoplens.query.hybrid import ranked_lists
    from shoplens.query.search import Searcher

    folder = write_folder(tmp_path / "model", models["image"])
    assert index(capsys, catalog, tmp_path / "index", folder)[0] == 0
    searcher = Searcher.open(tmp_path / "index")
    try:
        assert not searcher.encoder.supports_text
        lists = ranked_lists(searcher.text_side, "purple", 3)
        assert {"keyword", "semantic"} <= set(lists) and "imagebind" not in lists
        assert searcher.search_text("purple", k=1).hits[0].payload["title"] == "purple"
    finally:
        searcher.close()


def test_another_model_is_refused_with_the_command_that_fixes_it(models, catalog, tmp_path, cache, capsys):
    first = write_folder(tmp_path / "model", models["image"])
    other = write_folder(tmp_path / "other", models["image16x2"])
    assert index(capsys, catalog, tmp_path / "index", first, "--text", "off")[0] == 0
    before = sorted(p.read_bytes() for p in (tmp_path / "index").rglob("*") if p.is_file())
    code, _, err = index(capsys, catalog, tmp_path / "index", other, "--text", "off")
    assert code == 2 and err.count("error:") == 1 and err.startswith("error:"), err
    assert f"Use --encoder onnx:{first.resolve()}" in err and f"--encoder onnx:{other.resolve()}" in err
    code, _, err = run(capsys, "search", "--text", "red", "--index", tmp_path / "index", "--encoder", f"onnx:{other}")
    assert code == 2 and f"Use --encoder onnx:{first.resolve()}" in err, err
    # The same folder with its model file replaced: a new digest, refused too.
    shutil.copy(models["image16x2"], first / "image.onnx")
    code, _, err = run(capsys, "search", catalog / "cool" / "red.png", "--index", tmp_path / "index")
    assert code == 2 and "was built with encoder" in err, err
    assert sorted(p.read_bytes() for p in (tmp_path / "index").rglob("*") if p.is_file()) == before


def test_the_embedding_cache_keys_on_the_digest(models, tmp_path, cache):
    from shoplens.encoders import create_encoder
    from shoplens.vectors.embedcache import cache_file

    folder = write_folder(tmp_path / "model", models["image"])
    path = cache_file(create_encoder(f"onnx:{folder}"))
    assert path.parent == cache / "embeddings" and "/" not in path.name[len(str(path.parent)):]
    shutil.copy(models["image16x2"], folder / "image.onnx")
    assert cache_file(create_encoder(f"onnx:{folder}")) != path


def test_encoders_lists_onnx_dir_with_its_fields(capsys):
    code, out, _ = run(capsys, "encoders")
    line = next(line for line in out.splitlines() if line.startswith("onnx:DIR"))
    assert code == 0 and all(f in line for f in ('"name"', '"image"', '"size"', '"mean"', '"std"', '"fit"', '"text"',
                                                 '"tokenizer"', '"max_length"', '"licence"'))


def _bad(tmp_path, models, case: str) -> Path:
    folder = tmp_path / "model"
    full = dict(image=models["image"], text=models["text"], tokenizer=models["tokenizer"])
    if case == "no json":
        write_folder(folder, **full)
        (folder / "shoplens-model.json").unlink()
    elif case == "bad json":
        write_folder(folder, **full)
        (folder / "shoplens-model.json").write_text('{"name": "x", ')
    elif case == "no onnx":
        write_folder(folder, text=models["text"], tokenizer=models["tokenizer"])
    elif case == "bad onnx":
        write_folder(folder, **full)
        (folder / "image.onnx").write_bytes(b"not a model at all")
    elif case == "missing field":
        write_folder(folder, **full, size=None)
    elif case == "wrong type":
        write_folder(folder, **full, size="16")
    elif case == "mean of two":
        write_folder(folder, **full, mean=[0.5, 0.5])
    elif case == "input shape":
        write_folder(folder, **full, size=SIZE * 2)
    elif case == "output shape":
        write_folder(folder, image=models["rank3"])
    elif case == "text of another D":
        write_folder(folder, models["image"], models["text_other_dim"], models["tokenizer"])
    elif case == "bad tokenizer":
        write_folder(folder, **full)
        (folder / "tokenizer.json").write_text('{"model": {"type": "Nope"}}')
    elif case == "NaN":
        write_folder(folder, image=models["nan"])
    return folder


BAD = {"no json": "shoplens-model.json is missing", "bad json": "cannot read", "no onnx": "image.onnx is missing",
       "bad onnx": "not an ONNX model onnxruntime can load", "missing field": "has no 'size' field",
       "wrong type": "'size' must be an integer", "mean of two": "'mean' must be 3 numbers",
       "input shape": f"has shape ['n', 3, {SIZE}, {SIZE}], but shoplens-model.json says [N, 3, {SIZE * 2}",
       "output shape": "not [N, D]", "text of another D": "gives 5-d vectors but",
       "bad tokenizer": "does not load as a Hugging Face tokenizers file", "NaN": "returned NaN"}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_model_folders_are_refused_in_one_line_and_nothing_is_written(case, models, catalog, tmp_path, cache,
                                                                          capsys):
    folder = _bad(tmp_path, models, case)
    code, out, err = index(capsys, catalog, tmp_path / "index", folder, "--text", "off")
    assert code == 2 and err.startswith("error: ") and BAD[case] in err, err
    assert len([line for line in err.splitlines() if line.strip()]) == 1 and "Traceback" not in err
    assert not (tmp_path / "index").exists()  # no index created


def test_a_bad_folder_changes_nothing_in_an_existing_index(models, catalog, tmp_path, cache, capsys):
    folder = write_folder(tmp_path / "model", models["image"])
    assert index(capsys, catalog, tmp_path / "index", folder, "--text", "off")[0] == 0
    before = sorted(p.read_bytes() for p in (tmp_path / "index").rglob("*") if p.is_file())
    shutil.copy(models["nan"], folder / "image.onnx")
    (catalog / "cool" / "red.png").unlink()
    code, _, err = run(capsys, "index", catalog, "--index", tmp_path / "index", "--prune", "--quiet")
    assert code == 2 and err.startswith("error: "), err
    assert sorted(p.read_bytes() for p in (tmp_path / "index").rglob("*") if p.is_file()) == before


def test_a_relative_folder_travels_as_an_absolute_name(models, tmp_path, monkeypatch):
    from shoplens.index.indexer import IndexOptions

    write_folder(tmp_path / "model", models["image"])
    monkeypatch.chdir(tmp_path)
    options = IndexOptions(catalog=tmp_path, encoder="onnx:model")
    assert options.as_message()["encoder"] == f"onnx:{(tmp_path / 'model').resolve()}"
    assert IndexOptions(catalog=tmp_path, encoder="tiny").encoder == "tiny"


def test_the_export_script_fails_offline_in_one_line(tmp_path, monkeypatch, capsys):
    import socket
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    try:
        import export_onnx_model
    finally:
        sys.path.pop(0)

    def offline(*_args, **_kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    assert export_onnx_model.main(["clip-vit-b32", str(tmp_path / "clip")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach huggingface.co") and err.count("\n") == 1, err
    assert not (tmp_path / "clip").exists()
    assert export_onnx_model.main(["no-such-model", str(tmp_path / "x")]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_cuda_is_asked_for_first_when_onnxruntime_offers_it(monkeypatch):
    import onnxruntime

    from shoplens.encoders.onnxmodel import session_providers

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert session_providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_evaluate_and_tune_take_the_model_folder(models, catalog, tmp_path, cache, capsys, monkeypatch):
    folder = write_folder(tmp_path / "model", models["image"])
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "evaluate", catalog, "--label", "category", "--encoder", "onnx:model", "--json",
                         tmp_path / "eval.json", "--quiet")
    assert code == 0, err
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["encoder"] == f"onnx:{folder.resolve()}" and result["queries"] == len(COLOURS)
    assert result["onnx_model"]["name"] == "test-model"
    code, out, err = run(capsys, "tune", catalog, "--label", "category", "--encoder", "onnx:model", "--out",
                         tmp_path / "tuning.npz", "--json", tmp_path / "tune.json", "--quiet", "--force")
    assert code == 0, err
    from shoplens.tune import load_tuning

    assert load_tuning(tmp_path / "tuning.npz").encoder["encoder"] == f"onnx:{folder.resolve()}"


def test_the_app_indexes_with_the_folder_and_serves_its_words_search(models, catalog, tmp_path, cache,
                                                                       monkeypatch):
    from shoplens.web.serve import build_parser, create, sync_first

    write_folder(tmp_path / "model", models["image"], models["text"], models["tokenizer"])
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["--catalog", str(catalog), "--index", "index", "--encoder", "onnx:model"])
    assert sync_first(args) == 0
    app = create(tmp_path / "index", page_size=4)
    try:
        assert app.searcher.search_text("green", k=1).hits[0].payload["title"] == "green"
        assert app.searcher.search_image(catalog / "cool" / "blue.png", k=1).hits[0].payload["title"] == "blue"
    finally:
        app.close()
