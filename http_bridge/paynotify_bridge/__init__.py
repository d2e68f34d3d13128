"""paynotify HTTP bridge: receives Alipay's signed notifications and answers SUCCESS only after the acks."""

__all__: list[str] = []
