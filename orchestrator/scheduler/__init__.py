"""Every persona's night at the time its schedule says, with APScheduler, unattended for weeks.

Each module uses only those before it:

- runtime.py: one scheduler per job store (its lock), and what this process's running jobs share
  (room turns, the stop flag, the time a job was due);
- jobs.py: what a persona's job needs and does, and the log rows of runs that did not start;
- store.py: the job store, rebuilt from the persona files at every start, edited by other commands;
- service.py: `orchestrator serve`;
- status.py: what runs now, read from the log.

When a persona runs (its crontab schedule) is part of its plan: orchestrator/plan/schedule.py.
"""
