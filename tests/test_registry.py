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
