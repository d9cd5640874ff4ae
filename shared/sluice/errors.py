"""The error hierarchy every stage uses to decide between quarantine and retry.

`PermanentError` means bad data: quarantine it, acknowledge the message, never retry.
Every other exception is transient: the chunk is reported failed and SQS redelivers it.
"""

from __future__ import annotations


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""


class PermanentError(SluiceError):
    """Bad data: retrying cannot help. The record goes to quarantine with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(SluiceError):
    """A fault that a later attempt may not meet (throttle, timeout, a claim held elsewhere).

    `retry_after_s`, when known, is how long a retry before then would meet the same fault
    (a claim held until its expiry): an SQS message is then made visible again no sooner.
    """

    def __init__(self, *args: object, retry_after_s: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after_s = retry_after_s


class ConfigError(SluiceError):
    """A setting is missing or invalid. Transient on purpose: fix the deploy, then redrive."""


class MalformedEnvelopeError(PermanentError):
    """A message body that is not a Sluice envelope at all."""


class UnsupportedVersionError(SluiceError):
    """An envelope from a newer (or unknown) producer.

    Not permanent: the message goes to the DLQ and is redriven once this stage is upgraded,
    so nothing is lost to a deploy ordered the wrong way round.
    """


class OversizeRecordError(PermanentError):
    """A record larger than the hard maximum the pipeline carries, even by claim check."""


# The names apps may use (the modules offering them: `sluice.API`).
__all__ = [
    "ConfigError",
    "OversizeRecordError",
    "PermanentError",
    "SluiceError",
    "TransientError",
]
