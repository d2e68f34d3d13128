"""paynotify hub: stores Alipay notifications durably and delivers them to subscriber groups."""

__all__: list[str] = []
