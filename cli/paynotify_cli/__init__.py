"""The `paynotify` console script: one command, a subcommand per process or tool."""

__all__: list[str] = []
