"""The error a user can act on: a bad option, query or input, with a message that says what to do.

The lowest module of the package (it imports nothing of shoplens): every user-fixable error class
(CatalogError, StoreError, ImageError, EncoderError, LocaliserError, TuningError, DownloadError,
UnknownEncoderError, ...) inherits UserError, so the CLI and the app catch this one class.

A subclass of ValueError, so callers that catch ValueError still catch it; the CLI prints it as one
line and exits 2, while any other ValueError is a bug in shoplens and shows its traceback. Classes that
were RuntimeErrors (StoreError, ...) stay RuntimeErrors too.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in what the user asked for (an option, a query, a catalog); the message says how to fix it."""
