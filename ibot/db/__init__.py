"""The cost ledger database: engine, ORM tables, migrations and the Ledger itself."""

from ibot.db.engine import create_engine, make_sessionmaker, normalize_url
from ibot.db.ledger import Ledger, LedgerEntry, LedgerRow, Totals
from ibot.db.migrate import current_revision, head_revision, upgrade, upgrade_engine, upgrade_sync
from ibot.db.models import Base, LedgerRecord, UTCDateTime

__all__ = [
    "Base",
    "Ledger",
    "LedgerEntry",
    "LedgerRecord",
    "LedgerRow",
    "Totals",
    "UTCDateTime",
    "create_engine",
    "current_revision",
    "head_revision",
    "make_sessionmaker",
    "normalize_url",
    "upgrade",
    "upgrade_engine",
    "upgrade_sync",
]
