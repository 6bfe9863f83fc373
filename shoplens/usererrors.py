"""Which errors a user can act on (the command line prints them in one line, an app shows them)."""

from shoplens.catalog import CatalogError
from shoplens.download import DownloadError
from shoplens.encoders import EncoderError, UnknownEncoderError
from shoplens.errors import UserError
from shoplens.images import ImageError
from shoplens.localise import LocaliserError
from shoplens.store import StoreError
from shoplens.vectors.tuning import TuningError

# Errors a user can act on: one line, exit status 2, no traceback. Any other error (a ValueError from a bug
# included) shows its traceback: a one-line message would hide where it came from.
USER_ERRORS = (CatalogError, DownloadError, EncoderError, ImageError, LocaliserError, StoreError, TuningError,
               UnknownEncoderError, UserError)
