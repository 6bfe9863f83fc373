"""The one registry helper behind encoders, localisers and tuning methods: built-ins, $SHOPLENS_PLUGINS modules
and plugins by entry point (issue 19), on a fake installed distribution."""

from __future__ import annotations

import textwrap

import pytest

from shoplens.errors import UserError
from shoplens.registry import Registry


def fake_distribution(root, name: str, entry_points: str, modules: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata finds it: <name>-1.0.dist-info/ on a sys.path folder."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


def test_register_create_names_and_unknown():
    reg = Registry("widget", "shoplens.test_widgets")

    @reg.register("b", "the b one")
    def make_b(size=1):
        return ("b", size)

    reg.add("a", lambda: "a", "the a one")
    assert reg.names() == ["a", "b"]
    assert reg.describe() == {"a": "the a one", "b": "the b one"}
    assert reg.create("b", size=3) == ("b", 3)
    with pytest.raises(UserError, match=r"^unknown widget 'c'; known widgets: a, b$"):
        reg.create("c")


def test_entry_point_plugins_are_loaded_from_an_installed_distribution(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "shoplens_fake_plugins", """
        [shoplens.test_widgets]
        gadget = fake_widgets:make_gadget
        registered = fake_widgets_self
        """, {"fake_widgets": '''
        def make_gadget(colour="red"):
            """A gadget in any colour.

            More text that is not the description."""
            return f"gadget:{colour}"
        ''', "fake_widgets_self": '''
        from test_registry import REG

        @REG.register("self-made", "registers itself when imported")
        def make():
            return "self-made"
        '''})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert REG.names() == ["gadget", "self-made"]
    assert REG.create("gadget", colour="blue") == "gadget:blue"
    assert REG.describe()["gadget"] == "A gadget in any colour."
    assert REG.create("self-made") == "self-made"


REG = Registry("widget", "shoplens.test_widgets")


def test_a_broken_entry_point_plugin_is_an_error_naming_it(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "shoplens_broken_plugin", """
        [shoplens.test_broken]
        broken = no_such_module_here:make
        """, {})
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("widget", "shoplens.test_broken")
    with pytest.raises(UserError, match="cannot load widget plugin 'broken' \\(no_such_module_here:make"):
        reg.names()


def test_env_plugins_still_load(tmp_path, monkeypatch):
    (tmp_path / "env_widget.py").write_text("from test_registry import ENV_REG\n"
                                             "ENV_REG.add('env-made', lambda: 'env', 'from the environment')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SHOPLENS_PLUGINS", "env_widget")
    assert ENV_REG.create("env-made") == "env"
    monkeypatch.setenv("SHOPLENS_PLUGINS", "no_such_env_module")
    with pytest.raises(UserError, match="cannot import widget plugin 'no_such_env_module' from \\$SHOPLENS_PLUGINS"):
        ENV_REG.names()


ENV_REG = Registry("widget", "shoplens.test_env_widgets")


def test_encoders_localisers_and_tuning_methods_take_entry_point_plugins(tmp_path, monkeypatch):
    from shoplens.encoders import create_encoder, list_encoders
    from shoplens.encoders.tiny import TinyEncoder
    from shoplens.localise import create_localiser, list_localisers
    from shoplens.tune import get_method, list_methods

    fake_distribution(tmp_path, "shoplens_fake_everything", """
        [shoplens.encoders]
        ep-tiny = fake_everything:make_encoder

        [shoplens.localisers]
        ep-whole = fake_everything:WholePhoto

        [shoplens.tuning_methods]
        ep-identity = fake_everything:fit_identity
        """, {"fake_everything": '''
        from shoplens.encoders.tiny import TinyEncoder
        from shoplens.localise.base import Box, Localiser


        def make_encoder(**options):
            """The tiny encoder, by entry point."""
            return TinyEncoder(**options)


        class WholePhoto(Localiser):
            """One box: the whole photo."""

            name = "ep-whole"

            def locate(self, image):
                return [Box(0, 0, image.width, image.height, 1.0, "photo")]


        def fit_identity(x, y, **options):
            """No projection at all."""
            return [[]], {}
        '''})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert list_encoders()["ep-tiny"] == "The tiny encoder, by entry point."
    assert isinstance(create_encoder("ep-tiny"), TinyEncoder)
    assert list_localisers()["ep-whole"] == "One box: the whole photo."
    from PIL import Image

    [box] = create_localiser("ep-whole").locate(Image.new("RGB", (30, 20)))
    assert box.as_list()[:4] == [0, 0, 30, 20]
    assert list_methods()["ep-identity"] == "No projection at all."
    assert get_method("ep-identity")(None, None) == ([[]], {})


def test_the_public_functions_keep_their_shape():
    # Other code registers encoders with `register` and looks them up with create_encoder: unchanged.
    from shoplens.encoders import DEFAULT_ENCODER, UnknownEncoderError, create_encoder, list_encoders, register
    from shoplens.encoders.registry import FACTORIES

    @register("test-shape", "registered by a test")
    def make(**options):
        return ("made", options)

    try:
        assert create_encoder("test-shape", size=2) == ("made", {"size": 2})
        assert list_encoders()["test-shape"] == "registered by a test"
        assert DEFAULT_ENCODER in list_encoders()
        with pytest.raises(UnknownEncoderError, match="known encoders: .*test-shape"):
            create_encoder("no-such-encoder")
    finally:
        FACTORIES.pop("test-shape")
