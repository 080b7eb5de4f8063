"""Restore-or-create soft-deleted platform connections in PostgreSQL in one call."""

from cmis_repo.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RepositoryError,
    UnknownOrganisationError,
)
from cmis_repo.models import STATUSES, JsonValue, Outcome, PlatformConnection, UpsertResult
from cmis_repo.repository import PlatformConnectionRepository

__all__ = [
    "STATUSES",
    "ConflictError",
    "InvalidInputError",
    "JsonValue",
    "NotFoundError",
    "Outcome",
    "PermissionDeniedError",
    "PlatformConnection",
    "PlatformConnectionRepository",
    "RepositoryError",
    "UnknownOrganisationError",
    "UpsertResult",
]
