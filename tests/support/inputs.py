"""Bad and edge inputs of one call, as a table: shared by the single call's
tests (tests/test_bad_inputs.py) and the bulk call's, which must accept and
refuse exactly the same values (tests/test_bulk.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from cmis_repo import STATUSES, Outcome

#: The key of the live row every bad call aims at unless it changes a key part.
LIVE_ACCOUNT = "act_live"
#: The key of a soft-deleted row: a bad call must not restore it.
DELETED_ACCOUNT = "act_deleted"

#: Stands for "an org_id that is not in cmis.orgs" in the table below.
UNKNOWN_ORG = object()


@dataclass(frozen=True)
class Call:
    """One call's arguments; a case changes some of them."""

    # Any: the table passes None where the repository's signature says str.
    org_id: Any = None
    platform: Any = "meta"
    account_id: Any = LIVE_ACCOUNT
    account_name: str | None = None
    status: str | None = "active"
    sync_frequency_minutes: int | None = None


BAD_INPUTS = [
    # (changes to a good call, SQLSTATE, the argument the message must name)
    pytest.param({"org_id": None}, "22004", "p_org_id", id="org-null"),
    pytest.param({"org_id": UNKNOWN_ORG}, "23503", "p_org_id", id="org-unknown"),
    pytest.param({"platform": None}, "22004", "p_platform", id="platform-null"),
    pytest.param({"platform": ""}, "22023", "p_platform", id="platform-empty"),
    pytest.param({"platform": "   "}, "22023", "p_platform", id="platform-spaces"),
    pytest.param({"platform": "\t"}, "22023", "p_platform", id="platform-tab"),
    pytest.param({"platform": "Meta"}, "22023", "p_platform", id="platform-Meta"),
    pytest.param({"platform": "meta ads"}, "22023", "p_platform", id="platform-meta-space-ads"),
    pytest.param({"platform": "meta/ads"}, "22023", "p_platform", id="platform-meta-slash-ads"),
    pytest.param({"platform": " meta"}, "22023", "p_platform", id="platform-leading-space"),
    pytest.param({"platform": "meta\n"}, "22023", "p_platform", id="platform-trailing-newline"),
    pytest.param({"platform": "meta-"}, "22023", "p_platform", id="platform-trailing-dash"),
    pytest.param({"platform": "méta"}, "22023", "p_platform", id="platform-non-ascii"),
    pytest.param({"platform": "a" * 51}, "22001", "p_platform", id="platform-51-char-slug"),
    pytest.param({"account_id": None}, "22004", "p_account_id", id="account-null"),
    pytest.param({"account_id": ""}, "22023", "p_account_id", id="account-empty"),
    pytest.param({"account_id": "   "}, "22023", "p_account_id", id="account-spaces"),
    pytest.param({"account_id": "\t"}, "22023", "p_account_id", id="account-tab"),
    pytest.param({"account_id": " \n "}, "22023", "p_account_id", id="account-newline"),
    pytest.param({"account_id": " act_1"}, "22023", "p_account_id", id="account-leading-space"),
    pytest.param({"account_id": "act_1\t"}, "22023", "p_account_id", id="account-trailing-tab"),
    pytest.param({"account_id": "9" * 256}, "22001", "p_account_id", id="account-256-chars"),
    pytest.param({"account_id": "é" * 256}, "22001", "p_account_id", id="account-256-multibyte"),
    pytest.param({"account_name": "n" * 256}, "22001", "p_account_name", id="account-name-256"),
    pytest.param({"status": "paused"}, "22023", "p_status", id="status-paused"),
    pytest.param({"status": ""}, "22023", "p_status", id="status-empty"),
    pytest.param({"status": "ACTIVE"}, "22023", "p_status", id="status-ACTIVE"),
    pytest.param(
        {"status": "paused", "account_id": DELETED_ACCOUNT},
        "22023",
        "p_status",
        id="status-paused-on-deleted-key",
    ),
    pytest.param(
        {"sync_frequency_minutes": 0}, "22023", "p_sync_frequency_minutes", id="sync-frequency-0"
    ),
    pytest.param(
        {"sync_frequency_minutes": -5},
        "22023",
        "p_sync_frequency_minutes",
        id="sync-frequency-minus-5",
    ),
]

GOOD_EDGE_INPUTS = [
    pytest.param({"account_id": "9" * 255}, Outcome.CREATED, id="account-255-chars"),
    pytest.param({"account_id": "é" * 255}, Outcome.CREATED, id="account-255-multibyte"),
    pytest.param({"platform": "a" * 50}, Outcome.CREATED, id="platform-50-char-slug"),
    pytest.param({"platform": "google_ads"}, Outcome.CREATED, id="platform-underscore"),
    pytest.param({"platform": "meta-ads2"}, Outcome.CREATED, id="platform-dash-digit"),
    pytest.param({"account_name": "n" * 255}, Outcome.UPDATED, id="account-name-255"),
    pytest.param({"account_name": ""}, Outcome.UPDATED, id="account-name-empty"),
    pytest.param({"status": None}, Outcome.UPDATED, id="status-null-keeps"),
    pytest.param({"sync_frequency_minutes": 1}, Outcome.UPDATED, id="sync-frequency-1"),
    pytest.param(
        {"sync_frequency_minutes": 2**31 - 1}, Outcome.UPDATED, id="sync-frequency-int4-max"
    ),
    pytest.param({"account_id": DELETED_ACCOUNT}, Outcome.RESTORED, id="deleted-key-restored"),
    *(
        pytest.param({"status": status}, Outcome.UPDATED, id=f"status-{status}")
        for status in STATUSES
    ),
]
