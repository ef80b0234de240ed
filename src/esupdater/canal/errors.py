"""The error the Canal decoder raises for bad input: a DecodeError, so callers need no Canal."""

from __future__ import annotations

from esupdater.errors import DecodeError


class CanalDecodeError(DecodeError):
    """A Kafka record that is not a Canal message we can decode.

    Its class name goes into the dead letter's `esupdater.error_class` header, which says
    which format refused the record.
    """
