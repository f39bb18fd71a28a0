"""Orchestration: flows, tasks, deployments, schedules, flow runs and workers (DESIGN.md §8).

Every state change of a run is announced as an event on the stream (flow runs are also written in SQL
first), so automations can react to it; the actions in ``actions.orchestration`` act on these objects.

- ``states``, ``state_events``: the run states, the allowed moves, the events they announce.
- ``runs``: ``FlowRunStore`` — flow runs in SQL, conditional updates, claims, cancel.
- ``flows``, ``tasks``: ``@flow`` / ``@task``, ``load_flow``, parameters from type hints.
- ``engine``, ``lifecycle``, ``task_runs``, ``futures``, ``context``, ``options``: running a flow run or
  a task run through its states (retries, timeouts, hooks, futures, ``log_prints``).
- ``cache``: the task result cache under ``<home>/results/``.
- ``reporting``, ``sink``, ``sql_reporter``: who hears of state changes — buffered events for direct
  calls; SQL first, then events, for runs a worker executes.
- ``schedules``, ``occurrences``: cron / interval / rrule schedules and their DST-correct times.
- ``deployment_models``, ``deployment_rows``, ``deployments``, ``parameters``, ``deploy``,
  ``deployment_files``: deployments — the spec, its SQL rows, the store, parameter checks,
  ``flow.deploy`` and ``tripwire deploy -f``.
- ``scheduler``: creates scheduled runs ahead of time, marks Late runs, runs per-tick jobs (the reaper).
- ``worker``, ``processes``, ``execute``: claims due runs and runs each in a subprocess; cancellation,
  timeouts, heartbeats. ``reaper``: workers silent too long are dead, their runs Crashed.
"""
