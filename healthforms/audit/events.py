"""What an audit event says: who did what to which id, from where, and whether it worked.

Every feature records through `Auditor.record`; the hash-chained store lives in store.py.
Events never carry PHI: no answers, no names, no emails, only ids and outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from healthforms.clock import utcnow


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


# Every action the service records, and the only place they are named: API.md "Audit"
# lists the first ones; a new one is added here, named <resource>.<verb>.
AUTH_LOGIN = "auth.login"
AUTH_LOGIN_FAILED = "auth.login_failed"
AUTH_LOGOUT = "auth.logout"
AUTH_ACCOUNT_LOCKED = "auth.account_locked"
AUTH_PASSWORD_CHANGED = "auth.password_changed"  # noqa: S105 - an action name, not a secret
AUTH_TOTP_ENABLED = "auth.totp_enabled"
SESSION_REVOKED = "session.revoked"
CSRF_REJECTED = "csrf.rejected"
RATELIMIT_EXCEEDED = "ratelimit.exceeded"
FORM_CREATED = "form.created"
FORM_UPDATED = "form.updated"
FORM_PUBLISHED = "form.published"
LOCK_CONFLICT = "lock.conflict"
RESPONSE_SUBMITTED = "response.submitted"
RESPONSE_VIEWED = "response.viewed"
RESPONSE_DELETED = "response.deleted"
# The review of a response: marked reviewed, filed, or put back to new.
RESPONSE_REVIEWED = "response.reviewed"
RESPONSE_FILED = "response.filed"
RESPONSE_REOPENED = "response.reopened"
RESPONSE_NOTE_ADDED = "response.note_added"
RESPONSE_NOTES_VIEWED = "response.notes_viewed"  # staff notes are PHI: reads are audited
# A file attached to a response was served to staff (uploads/; detail: which file).
RESPONSE_FILE_VIEWED = "response.file_viewed"
# A response's answers left the service to another system (a webhook endpoint that opted
# in to QuestionnaireResponse bodies): one event per call that carried them (detail:
# channel, endpointId, webhookId, attempt, status), for the accounting of disclosures.
RESPONSE_DISCLOSED = "response.disclosed"
# A list or search that showed patients' names: one event naming the responses (detail).
RESPONSES_LISTED = "responses.listed"
# `healthforms responses reindex` decrypted responses to rebuild their patients' indexes.
RESPONSES_REINDEXED = "responses.reindexed"
# An admin sent a dead letter of the outbox again (outbox/worker.py redeliver).
DELIVERY_REDELIVERED = "delivery.redelivered"
# The retention purge deleted a batch of a form's expired responses (no actor: the
# command or the daily job; detail: count, responseIds, retentionDays, before).
RESPONSES_PURGED = "responses.purged"
# ... and the requests to patients of that form that ended unanswered before the cutoff.
REQUESTS_PURGED = "requests.purged"
# Exports (exports/): ONE event per export file, recorded before its first byte leaves,
# whose detail names every response it holds ({"format", "count", "responseIds"}: ids
# and counts, never answers), rather than an event per response.
RESPONSES_EXPORTED = "responses.exported"  # a CSV or XLSX of a form's responses
RESPONSES_PDFS_EXPORTED = "responses.pdfs_exported"  # a ZIP of selected responses' PDFs
# Requests to a patient (patient_requests/): a personal single-use link and its life.
# Ids only; `request.opened` is the patient's (pseudonymised like a submission), and
# `request.completed` commits with the response it produced.
REQUEST_CREATED = "request.created"
REQUEST_REISSUED = "request.reissued"  # a new link; the old one stopped working
REQUEST_SENT = "request.sent"  # detail {"channel"}: handed over by staff, or email
REQUEST_CANCELLED = "request.cancelled"
REQUEST_OPENED = "request.opened"
REQUEST_COMPLETED = "request.completed"
# A list that showed patients' names and contacts: one event naming the requests (detail).
REQUESTS_LISTED = "requests.listed"
# Branding (branding/): an admin changed what patients see of the clinic. No PHI; the
# detail names what changed ({"changed": [...]}) or the new logo's type and size.
BRANDING_UPDATED = "branding.updated"
BRANDING_LOGO_SET = "branding.logo_set"
BRANDING_LOGO_REMOVED = "branding.logo_removed"
# A patient's saved draft (submissions/drafts/): ids only, never answers. Saved (detail
# {"formId", "created"}), resumed (a read of PHI; detail {"formId", "via": "link"|"code",
# "dropped"}), deleted (detail {"reason": "submitted"|"expired"|"discarded"}; when sent,
# in the response's transaction; when expired, by the sweep, with no actor).
DRAFT_SAVED = "draft.saved"
DRAFT_RESUMED = "draft.resumed"
DRAFT_DELETED = "draft.deleted"
DRAFT_EMAILED = "draft.emailed"  # the patient asked for the link by email (no address)
PDF_GENERATED = "pdf.generated"
PDF_SERVED = "pdf.served"
USER_CREATED = "user.created"
USER_DISABLED = "user.disabled"
USER_UPDATED = "user.updated"
# Account recovery and two-step sign-in (identity/): a reset by an admin has the admin as
# actor; one from `healthforms user reset-*` has no actor (the shell).
USER_PASSWORD_RESET = "user.password_reset"  # noqa: S105 - an action name, not a secret
USER_TOTP_RESET = "user.totp_reset"
AUTH_TOTP_DISABLED = "auth.totp_disabled"
AUTH_RECOVERY_CODE_USED = "auth.recovery_code_used"
AUTH_RECOVERY_CODES_REGENERATED = "auth.recovery_codes_regenerated"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: str
    outcome: Outcome = Outcome.SUCCESS
    organization_id: str | None = None
    actor_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None  # always the server's own id (X-Request-ID answered)
    client_request_id: str | None = None  # the id a client sent, if any: kept apart
    at: datetime = field(default_factory=utcnow)
    # What an event about many records says of them: ids and counts only, never PHI
    # (e.g. {"count": 2, "responseIds": [...]} for a list view or an export).
    detail: dict[str, object] | None = None
