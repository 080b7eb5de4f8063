"""Restore-or-create soft-deleted platform connections in PostgreSQL in one call."""

from importlib.metadata import PackageNotFoundError, version

from cmis_repo.encryption import LaravelEncrypter, TokenCipher
from cmis_repo.errors import (
    ConflictError,
    ConnectionLostError,
    DatabaseUnreachableError,
    DeadlockError,
    DecryptionError,
    EncryptionKeyError,
    InvalidInputError,
    LockNotAvailableError,
    NotFoundError,
    PermissionDeniedError,
    RepositoryError,
    RetryableError,
    SerializationFailureError,
    UnknownOrganisationError,
)
from cmis_repo.models import (
    STATUSES,
    ConnectionInput,
    JsonValue,
    Outcome,
    PlatformConnection,
    UpsertResult,
)
from cmis_repo.repository import PlatformConnectionRepository
from cmis_repo.values import END_OF_TIME, MAX_JSON_DEPTH, START_OF_TIME, UnparsedJson

try:
    __version__ = version("cmis-repo")
except PackageNotFoundError:  # not installed: run from a source tree without pip install
    __version__ = "0+unknown"

__all__ = [
    "END_OF_TIME",
    "MAX_JSON_DEPTH",
    "START_OF_TIME",
    "STATUSES",
    "ConflictError",
    "ConnectionInput",
    "ConnectionLostError",
    "DatabaseUnreachableError",
    "DeadlockError",
    "DecryptionError",
    "EncryptionKeyError",
    "InvalidInputError",
    "JsonValue",
    "LaravelEncrypter",
    "LockNotAvailableError",
    "NotFoundError",
    "Outcome",
    "PermissionDeniedError",
    "PlatformConnection",
    "PlatformConnectionRepository",
    "RepositoryError",
    "RetryableError",
    "SerializationFailureError",
    "TokenCipher",
    "UnknownOrganisationError",
    "UnparsedJson",
    "UpsertResult",
]
