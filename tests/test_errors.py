"""One UserError base for every error a user can act on (issue 19): the CLI and the app catch one class, and
shoplens.usererrors imports no package to list them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from conftest import REPO


def test_usererrors_imports_no_package():
    code = ("import sys, shoplens.usererrors; "
            "print(sorted(m for m in sys.modules if m.startswith('shoplens')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['shoplens', 'shoplens.errors', 'shoplens.usererrors']"


def test_every_user_error_inherits_one_base_and_keeps_its_old_one():
    from shoplens.catalog import CatalogError
    from shoplens.download import DownloadError
    from shoplens.encoders import EncoderError, UnknownEncoderError
    from shoplens.errors import UserError
    from shoplens.images import ImageError
    from shoplens.index.channel import ChannelError
    from shoplens.index.tuning import TuningIndexError
    from shoplens.localise import LocaliserError
    from shoplens.quality.phrasings import PhrasingError
    from shoplens.store import DiskSpaceError, IndexDamagedError, IndexMismatchError, ServerLostError, StoreError
    from shoplens.text.bridge import BridgeMismatchError
    from shoplens.tune.base import TuningError
    from shoplens.usererrors import USER_ERRORS

    old_bases = {CatalogError: ValueError, DownloadError: RuntimeError, EncoderError: RuntimeError,
                 UnknownEncoderError: KeyError, ImageError: ValueError, ChannelError: RuntimeError,
                 TuningIndexError: RuntimeError, LocaliserError: RuntimeError, PhrasingError: ValueError,
                 StoreError: RuntimeError, IndexDamagedError: RuntimeError, IndexMismatchError: RuntimeError,
                 DiskSpaceError: RuntimeError, ServerLostError: RuntimeError, BridgeMismatchError: ValueError,
                 TuningError: RuntimeError}
    for cls, old in old_bases.items():
        assert issubclass(cls, UserError), cls
        assert issubclass(cls, old), cls  # code that caught the old base still catches it
        with pytest.raises(USER_ERRORS):
            raise cls("what to do")
    assert str(UnknownEncoderError("unknown encoder 'x'")) == "unknown encoder 'x'"  # not KeyError's repr


def test_an_error_the_app_sends_over_its_channel_reaches_the_client_as_sent():
    # ChannelError is now a ValueError too: the client's "broken line" handler must not swallow it.
    from shoplens.index.channel import ChannelError, request

    ours, app = socket.socketpair()
    try:
        app.sendall((json.dumps({"error": "the catalog is gone; run it again"}) + "\n").encode())
        with pytest.raises(ChannelError, match="^the catalog is gone; run it again$"):
            request(ours, "sync")
    finally:
        app.close()


def test_cli_prints_any_user_error_in_one_line(monkeypatch, capsys):
    from shoplens import cli
    from shoplens.images import ImageError

    def boom(_args):
        raise ImageError("photo.jpg: not an image; give a JPEG or PNG")

    assert cli.run(boom, None) == 2
    assert capsys.readouterr().err == "error: photo.jpg: not an image; give a JPEG or PNG\n"
