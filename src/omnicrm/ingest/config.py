"""The ingest config: where raw files are, which source mappings apply, where the store goes."""

from __future__ import annotations

from omnicrm.config import StrictModel
from omnicrm.identity.config import IdentityConfig, PrivacyConfig


class IngestConfig(StrictModel):
    """An ingest run: where raw files are, which source mappings apply, where the store goes.

    ``raw_dir`` and ``store`` are relative to the working directory (the project root);
    ``sources`` are mapping files relative to this config file.
    """

    raw_dir: str
    store: str
    sources: list[str]
    privacy: PrivacyConfig = PrivacyConfig()
    identity: IdentityConfig = IdentityConfig()
    #: event types and channels accepted beyond the store contract's (e.g. ``sms_sent``, ``kiosk``)
    extra_event_types: list[str] = []
    extra_channels: list[str] = []
