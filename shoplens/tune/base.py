"""Moved to shoplens.vectors.tuning (below both index/ and tune/); this name is kept for old imports."""

from shoplens.vectors.tuning import *  # noqa: F401,F403
from shoplens.vectors.tuning import FORMAT, Tuning, TuningError, check_tuning, load_tuning  # noqa: F401
