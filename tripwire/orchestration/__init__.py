"""Orchestration: flows, tasks, deployments, schedules, flow runs and workers (DESIGN.md §8).

Every state change of a run is written (flow runs, in SQL) and announced as an event on the stream, so
automations can react to it; the actions in ``actions.orchestration`` act on these objects.

| module | what |
|---|---|
| ``states`` | the run states and the allowed moves |
| ``state_events`` | the events orchestration emits (names, resources, related, stable ids) |
| ``runs`` | ``FlowRunStore``: flow runs in SQL, conditional updates, claims, announced changes |
"""
