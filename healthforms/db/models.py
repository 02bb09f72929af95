"""Import every feature's models so that Base.metadata knows all tables (Alembic uses it)."""

from healthforms.audit.models import AuditEventRow
from healthforms.db.base import Base
from healthforms.identity.models import Organization, User
from healthforms.security.fencing import LockFence

__all__ = ["AuditEventRow", "Base", "LockFence", "Organization", "User"]
