"""`make chaos`: the one promise of DESIGN.md under faults, measured on the real processes.

Entry point: ``python -m chaos.run`` (see docs/chaos.md). Hubs, bridges and subscribers run as
processes on 127.0.0.1; an Alipay simulator sends thousands of signed notifications on a compressed
retry schedule while a fault injector kills and restarts them; at the end the store, the members'
own logs and the simulator's replies are compared, and the figures printed.

Modules: `config` (settings and presets), `procs` (process groups, cleanup), `pg` (schema, cluster
restart), `topology` (which processes), `subscriber_proc` (a recording, crashable subscriber),
`alipay` (the simulator), `faults` (the injector), `evidence` (reading the store and the logs),
`verify` (the figures and the verdict), `report` (printing them), `harness` (one mode's run,
start to figures), `run` (the command line).
"""
