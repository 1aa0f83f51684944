"""Webhook notifications (``approval_requested``, ``sla_breach``, ...) via a transactional outbox.

``enqueue`` writes a notification in the caller's transaction; a ``Dispatcher`` in each
replica delivers it, signed (``sign``/``verify_signature``), to the ``WebhookTarget``s that
want its kind, retrying with backoff.
"""

from warden.notify._config import NotifyError, WebhookTarget, load_webhook_targets
from warden.notify._dispatcher import Dispatcher, backoff_delay
from warden.notify._outbox import enqueue
from warden.notify._signing import sign, verify_signature

__all__ = [
    "Dispatcher",
    "NotifyError",
    "WebhookTarget",
    "backoff_delay",
    "enqueue",
    "load_webhook_targets",
    "sign",
    "verify_signature",
]
