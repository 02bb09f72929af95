"""Import every feature's models so that Base.metadata knows all tables (Alembic uses it)."""

from healthforms.audit.models import AuditEventRow
from healthforms.db.base import Base
from healthforms.forms.models import Form, FormVersion
from healthforms.identity.models import Organization, User
from healthforms.responses.models import ResponsePdf, ResponseRow
from healthforms.security.fencing import LockFence, LockLease

__all__ = [
    "AuditEventRow",
    "Base",
    "Form",
    "FormVersion",
    "LockFence",
    "LockLease",
    "Organization",
    "ResponsePdf",
    "ResponseRow",
    "User",
]
