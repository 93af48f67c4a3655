"""The job function's module path in job stores written before the scheduler was split into modules.

APScheduler stores a job's function as text and deletes a job whose function does not import; a
store written by that version holds ``orchestrator.scheduler.schedule:run_persona_job``.
"""

from orchestrator.scheduler.jobs import run_persona_job

__all__ = ["run_persona_job"]
