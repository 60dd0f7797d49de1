"""Signed envelopes for messages that cross Redis.

Unpickling runs code, so nothing read from Redis is unpickled before its
HMAC-SHA256 signature is checked. An envelope is::

    b"PA1" | run id length (1 byte) | run id | signature (32 bytes) | payload

The signature covers the run id and the payload, so a message from another
run, or tampered with in any byte, fails the check. The run id also travels in
clear, so the receiver can tell a message from another run from a forgery.
"""

from __future__ import annotations

import enum
import hashlib
import hmac

MAGIC = b"PA1"
SIGNATURE_SIZE = hashlib.sha256().digest_size
INSECURE_KEY = b""
"""Key used under --insecure: the envelope still detects damage and other runs."""


class Rejection(str, enum.Enum):
    """The reason an envelope was not opened."""

    NOT_A_MESSAGE = "not a message"
    OTHER_RUN = "from another run"
    BAD_SIGNATURE = "unsigned or tampered with"


class EnvelopeRejected(Exception):
    """Raised by `Signer.open` for an envelope that must not be unpickled."""

    def __init__(self, reason: Rejection, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason.value}{': ' + detail if detail else ''}")


class Signer:
    """Seals and opens envelopes of one run under one shared secret."""

    def __init__(self, secret: bytes, run_id: str) -> None:
        self._secret = secret
        self._run_id = run_id.encode()
        if len(self._run_id) > 255:
            raise ValueError("run ids longer than 255 bytes cannot be signed")
        self._header = MAGIC + bytes([len(self._run_id)]) + self._run_id

    def seal(self, payload: bytes) -> bytes:
        return self._header + self._sign(self._run_id, payload) + payload

    def open(self, envelope: bytes) -> bytes:
        """Return the payload of a valid envelope, or raise `EnvelopeRejected`."""
        if len(envelope) < len(MAGIC) + 1 or not envelope.startswith(MAGIC):
            raise EnvelopeRejected(Rejection.NOT_A_MESSAGE)

        run_id_end = len(MAGIC) + 1 + envelope[len(MAGIC)]
        run_id = envelope[len(MAGIC) + 1 : run_id_end]
        signature = envelope[run_id_end : run_id_end + SIGNATURE_SIZE]
        payload = envelope[run_id_end + SIGNATURE_SIZE :]
        if len(signature) < SIGNATURE_SIZE:
            raise EnvelopeRejected(Rejection.NOT_A_MESSAGE, "truncated")
        if run_id != self._run_id:
            raise EnvelopeRejected(
                Rejection.OTHER_RUN, run_id.decode("utf-8", "replace")
            )
        if not hmac.compare_digest(signature, self._sign(run_id, payload)):
            raise EnvelopeRejected(Rejection.BAD_SIGNATURE)
        return payload

    def _sign(self, run_id: bytes, payload: bytes) -> bytes:
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        mac.update(run_id)
        mac.update(b"\0")
        mac.update(payload)
        return mac.digest()
