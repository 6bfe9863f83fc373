"""Encoders: photos (and, where the model can, text) to vectors."""

from shoplens.encoders.base import Encoder, EncoderError, l2_normalise
from shoplens.encoders.factory import create_encoder, list_encoders
from shoplens.encoders.registry import DEFAULT_ENCODER, UnknownEncoderError, register

__all__ = ["DEFAULT_ENCODER", "Encoder", "EncoderError", "UnknownEncoderError", "create_encoder",
           "l2_normalise", "list_encoders", "register"]
