"""Which errors a user can act on (the command line prints them in one line, an app shows them).

Every such error inherits shoplens.errors.UserError (CatalogError, StoreError, ImageError, EncoderError,
LocaliserError, TuningError, DownloadError, UnknownEncoderError, ...), so this module imports no package:
catching USER_ERRORS catches them all, wherever they are defined.
"""

from shoplens.errors import UserError

# Errors a user can act on: one line, exit status 2, no traceback. Any other error (a ValueError from a bug
# included) shows its traceback: a one-line message would hide where it came from.
USER_ERRORS = (UserError,)
