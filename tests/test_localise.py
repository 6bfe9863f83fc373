"""Finding products in a shopper's photo: boxes, the saliency localiser on hand-made photos, the optional
YOLO path, and search with the crop."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from PIL import Image

from handmade import MULTI, MULTI_SEED, PRODUCTS, build_index, catalog_photo, shopper_photo
from shoplens.localise import (Box, CropEncoder, LocaliserError, best_crop, check_crop, create_localiser,
                               list_localisers)
from shoplens.localise import yolo


@pytest.fixture(scope="module")
def saliency():
    return create_localiser("saliency")


# --- boxes ---

def test_box_iou_expand_and_crop():
    a, b = Box(0, 0, 10, 10), Box(5, 0, 15, 10)
    assert a.iou(b) == pytest.approx(50 / 150)
    assert a.iou(Box(20, 20, 30, 30)) == 0.0 and a.iou(a) == 1.0
    assert Box(10, 10, 20, 30).expand(0.5, 24, 100).as_list() == [5, 0, 24, 40]  # clipped to the photo
    img = Image.new("RGB", (40, 30), (9, 9, 9))
    assert Box(30, 20, 60, 60).crop(img).size == (10, 10)
    with pytest.raises(LocaliserError, match="outside"):
        Box(50, 50, 60, 60).crop(img)
    with pytest.raises(LocaliserError, match="x1 > x0"):
        Box(5, 5, 5, 9)
    assert Box(1, 2, 3, 4, 0.123456, "bag").as_dict() == {"x0": 1, "y0": 2, "x1": 3, "y1": 4, "score": 0.1235,
                                                          "label": "bag"}


def test_registry_names_and_clear_errors(monkeypatch):
    assert {"auto", "saliency", "yolo"} <= set(list_localisers())
    with pytest.raises(LocaliserError, match="unknown localiser 'sam'.*saliency"):
        create_localiser("sam")
    with pytest.raises(LocaliserError, match="crop must be one of auto, off"):
        check_crop("best")
    with pytest.raises(LocaliserError, match="threshold"):
        create_localiser("saliency", threshold=1.5)
    monkeypatch.setattr(yolo, "available", lambda weights=None: False)
    assert create_localiser("auto").name == "saliency"  # YOLO is never required


# --- the optional YOLO detector ---

def test_yolo_without_package_or_weights_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv(yolo.WEIGHTS_ENV, str(tmp_path / "missing.pt"))
    monkeypatch.setattr(yolo, "installed", lambda: False)
    localiser = create_localiser("yolo")  # cheap: nothing loads yet
    assert not yolo.available()
    with pytest.raises(LocaliserError, match="pip install ultralytics"):
        localiser.locate(Image.new("RGB", (32, 32)))
    monkeypatch.setattr(yolo, "installed", lambda: True)  # installed, weights not
    with pytest.raises(LocaliserError, match="weights file at .*missing.pt.*never downloads"):
        create_localiser("yolo").locate(Image.new("RGB", (32, 32)))


def test_yolo_boxes_from_an_ultralytics_model(monkeypatch, tmp_path):
    """The real YoloLocaliser code over a stand-in `ultralytics` module (the package is AGPL and not installed)."""
    weights = tmp_path / "yolo.pt"
    weights.write_bytes(b"weights")
    seen = {}

    class Tensor(list):
        def tolist(self):
            return list(self)

    class YOLO:
        def __init__(self, path):
            seen["path"] = path

        def predict(self, image, conf, max_det, verbose):
            seen.update(size=image.size, conf=conf, max_det=max_det)
            boxes = types.SimpleNamespace(xyxy=Tensor([[10.2, 5.7, 50.5, 40.0], [-3, 0, 90, 70]]),
                                          conf=Tensor([0.4, 0.9]), cls=Tensor([24.0, 39.0]))
            return [types.SimpleNamespace(boxes=boxes, names={24: "handbag", 39: "bottle"})]

    monkeypatch.setitem(sys.modules, "ultralytics", types.SimpleNamespace(YOLO=YOLO))
    monkeypatch.setattr(yolo, "installed", lambda: True)
    monkeypatch.setenv(yolo.WEIGHTS_ENV, str(weights))
    localiser = create_localiser("auto")  # package + weights present: auto picks YOLO
    assert localiser.name == "yolo" and "AGPL-3.0" in localiser.licence
    boxes = localiser.locate(Image.new("RGB", (80, 60)))
    assert seen["path"] == str(weights) and seen["size"] == (80, 60)
    assert [(b.as_list(), b.label) for b in boxes] == [([0, 0, 80, 60], "bottle"), ([10, 5, 50, 40], "handbag")]
    assert boxes[0].score == pytest.approx(0.9)


# --- the saliency localiser on hand-made photos ---

@pytest.mark.parametrize("seed,name,at", [(0, "red-bag", (60, 50)), (1, "blue-box", (400, 220)),
                                          (2, "green-shoe", (250, 120)), (3, "yellow-bag", (430, 40)),
                                          (4, "purple-box", (100, 300)), (5, "orange-shoe", (300, 260))])
def test_saliency_box_overlaps_the_pasted_product(saliency, seed, name, at):
    photo, truth = shopper_photo({name: at}, seed=seed)
    boxes = saliency.locate(photo)
    assert boxes, "no box found"
    assert boxes[0].iou(truth[name]) >= 0.5, (boxes[0], truth[name])
    assert all(0 <= b.x0 < b.x1 <= 640 and 0 <= b.y0 < b.y1 <= 480 for b in boxes)


def test_saliency_finds_each_item_of_a_multi_item_photo(saliency):
    photo, truth = shopper_photo(MULTI, seed=MULTI_SEED)
    boxes = saliency.locate(photo)
    for name, true in truth.items():
        assert max(b.iou(true) for b in boxes) >= 0.5, (name, boxes)


def test_saliency_on_a_plain_photo_and_odd_shapes(saliency):
    assert saliency.locate(Image.new("RGB", (300, 200), (120, 120, 120))) == []  # nothing stands out
    photo, truth = shopper_photo({"blue-box": (700, 40)}, seed=3, size=(1000, 240))  # very wide, scaled up
    assert saliency.locate(photo)[0].iou(truth["blue-box"]) >= 0.5


# --- search with the crop ---

@pytest.fixture(scope="module")
def handmade_index(tmp_path_factory):
    return build_index(tmp_path_factory.mktemp("handmade"))


@pytest.fixture(scope="module")
def searcher(handmade_index, saliency):
    from shoplens.query.search import Searcher

    s = Searcher.open(handmade_index)
    s._localiser = saliency  # share the loaded model across tests
    yield s
    s.close()


@pytest.mark.parametrize("name,at,seed", [("red-bag", (400, 250), 11), ("green-shoe", (60, 320), 12),
                                          ("purple-box", (240, 60), 13)])
def test_search_with_the_crop_ranks_the_product_first(searcher, name, at, seed):
    photo, truth = shopper_photo({name: at}, seed=seed)
    whole = searcher.search_image(photo, k=6, crop="off")
    cropped = searcher.search_image(photo, k=6, crop="auto")
    assert whole.box is None and cropped.box.iou(truth[name]) >= 0.5
    assert cropped.hits[0].product_id.endswith(name)
    # The whole photo is mostly background: the product scores lower there, whatever its rank.
    whole_score = {h.product_id: h.score for h in whole.hits}[cropped.hits[0].product_id]
    assert cropped.hits[0].score > whole_score + 0.1


def test_search_items_gives_results_per_item(searcher):
    photo, truth = shopper_photo(MULTI, seed=MULTI_SEED)
    items = searcher.search_items(photo, k=3)
    assert items[0].box is None and len(items) >= 4
    firsts = {r.hits[0].product_id.split("/")[-1] for r in items[1:]}
    assert {"red-bag", "blue-box", "green-shoe"} <= firsts
    boxes = searcher.locate(photo)
    assert [r.box for r in items[1:]] == boxes
    picked = searcher.search_image(photo, k=3, crop=boxes[1])
    assert picked.box == boxes[1] and picked.hits[0].id == items[2].hits[0].id


def test_crop_encoder_embeds_the_best_crop(saliency):
    from conftest import ColourEncoder

    inner = ColourEncoder()
    photo, truth = shopper_photo({"yellow-bag": (300, 200)}, seed=3)
    wrapped = CropEncoder(inner, saliency)
    assert (wrapped.name, wrapped.version, wrapped.dim) == (inner.name, inner.version, inner.dim)
    assert wrapped.options["crop"] == "auto" and wrapped.options["localiser"] == "saliency"
    crop, box = best_crop(photo, saliency)
    np.testing.assert_allclose(wrapped.embed(photo), inner.embed(crop), atol=1e-6)
    assert box.iou(truth["yellow-bag"]) >= 0.5
    yellow = np.asarray(PRODUCTS["yellow-bag"][0], np.float32) + 1
    assert wrapped.embed(photo) @ (yellow / np.linalg.norm(yellow)) > inner.embed(photo) @ (
        yellow / np.linalg.norm(yellow))


def test_evaluate_crops_only_queries(tmp_path, saliency):
    from shoplens.quality.evaluate import evaluate

    catalog = tmp_path / "catalog"
    queries = tmp_path / "queries"
    for i, name in enumerate(PRODUCTS):
        catalog_photo(name, catalog / name / "shop.jpg")
        photo, _ = shopper_photo({name: (80 + 40 * i, 60 + 20 * i)}, seed=20 + i)
        (queries / name).mkdir(parents=True)
        photo.save(queries / name / "shopper.jpg", quality=92)
    off = evaluate(catalog, "category", queries=queries, encoder="tiny", use_cache=False)
    auto = evaluate(catalog, "category", queries=queries, encoder="tiny", use_cache=False, crop="auto",
                    localiser=saliency)
    assert auto.info["crop"] == "auto" and auto.encoder["encoder_options"]["crop"] == "auto"
    assert auto.summary["hit@1"] == 1.0 > off.summary["hit@1"]
    with pytest.raises(ValueError, match="--queries"):
        evaluate(catalog, "category", encoder="tiny", crop="auto")
