"""Domain errors shared by the CLI, the trainers, export and (later) the gRPC layer.

Each error names what was wrong (a config field or a file) so the CLI can print one line and
the server can map it to a status code without parsing messages.
"""

from __future__ import annotations


class EdgetuneError(Exception):
    """Base class: anything a user or client can cause."""

    exit_code = 2

    def __init__(self, subject: str, message: str):
        self.subject = subject
        self.message = message
        super().__init__(f"{subject}: {message}")


class InvalidArgument(EdgetuneError):
    """A config field or argument has a bad value. ``subject`` is the field name."""


class DataError(EdgetuneError):
    """A dataset cannot be used as given. ``subject`` names the file or folder."""

    def __init__(self, subject: str, message: str, files: list[str] | None = None):
        super().__init__(subject, message)
        self.files = files or []


class WeightsError(EdgetuneError):
    """Base weights are missing or do not fit the architecture. ``subject`` is the file."""


class NotFound(EdgetuneError):
    """A run, bundle or catalog entry does not exist."""


class ParityError(EdgetuneError):
    """ONNX Runtime outputs differ from PyTorch beyond the spec's tolerance: the export fails."""

    exit_code = 3

    def __init__(self, subject: str, message: str, report: object | None = None):
        super().__init__(subject, message)
        self.report = report


class AlreadyExists(EdgetuneError):
    """A resource with this key exists with different content (e.g. an idempotency key reused)."""


class FailedPrecondition(EdgetuneError):
    """The resource is not in a state that allows this (e.g. exporting an unfinished job)."""


class ResourceExhausted(EdgetuneError):
    """A quota or queue bound would be exceeded."""


class PermissionDenied(EdgetuneError):
    """The caller is known but may not do this (a scope it lacks, a resource another principal owns)."""


class Unauthenticated(EdgetuneError):
    """The caller did not prove who it is (no token, or a token the server does not know)."""


def shown(value: str, limit: int = 64) -> str:
    """A client-supplied string quoted for an error message, cut to ``limit`` characters: a
    16 KB id echoed back would otherwise overflow gRPC's trailer and hide the real error."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"


class DeadlineExceeded(EdgetuneError):
    """A time bound ran out (e.g. an upload stream that went silent)."""
