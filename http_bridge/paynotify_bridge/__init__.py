"""paynotify HTTP bridge: receives Alipay's signed notifications, answers SUCCESS after the acks."""

__all__: list[str] = []
