"""Masks for personal data in logs: customer ids and display ids never reach a log unmasked.

A mask always has the same number of stars, so it does not reveal the length of what it hides.
"""

from __future__ import annotations

from paynotify.v1 import notification_pb2 as pb

__all__ = ["MASK", "mask_display_id", "mask_email", "mask_id", "safe_summary"]

MASK = "****"
# Only values at least this long keep their first and last two characters.
_MIN_PARTIAL = 10


def mask_id(value: str) -> str:
    """``"20885028136924G7"`` -> ``"20****G7"``; shorter than 10 characters -> ``"****"``."""
    if not value:
        return ""
    if len(value) < _MIN_PARTIAL:
        return MASK
    return f"{value[:2]}{MASK}{value[-2:]}"


def mask_email(value: str) -> str:
    """``"buyer@alitest.com"`` -> ``"b****@alitest.com"``: the domain stays, the mailbox goes."""
    local, at, domain = value.rpartition("@")
    if not at or not local:
        return mask_id(value)
    return f"{local[0]}{MASK}@{domain}"


def mask_display_id(value: str) -> str:
    """A wallet's displayCustomerId: an e-mail address keeps its domain, anything else `mask_id`."""
    return mask_email(value) if "@" in value else mask_id(value)


def safe_summary(notification: pb.PaymentNotification) -> dict[str, str]:
    """What a log line may say about a notification: ids, amount, status, masked customer ids.

    Never the body. Keys do not clash with `logging.LogRecord` attributes.
    """
    summary = {
        "notify_type": notification.notify_type_text
        or pb.NotifyType.Name(notification.notify_type),
        "payment_request_id": notification.payment_request_id,
        "payment_id": notification.payment_id,
        "amount": _amount(notification.payment_amount),
    }
    if notification.HasField("result"):
        summary["result_status"] = pb.ResultStatus.Name(
            notification.result.result_status
        ).removeprefix("RESULT_STATUS_")
        summary["result_code"] = notification.result.result_code
    if notification.HasField("psp_customer_info"):
        summary.update(_psp_summary(notification.psp_customer_info))
    return summary


def _amount(amount: pb.Amount) -> str:
    return f"{amount.currency} {amount.value}" if amount.currency or amount.value else ""


def _psp_summary(info: pb.PspCustomerInfo) -> dict[str, str]:
    return {
        "psp_name": info.psp_name,
        "psp_customer_id": mask_id(info.psp_customer_id),
        "display_customer_id": mask_display_id(info.display_customer_id),
    }
