"""The job function's module path in job stores written before the package was split into parts.

APScheduler stores a job's function as text and deletes a job whose function does not import; a
store written by those versions holds ``orchestrator.schedule:run_persona_job``.
"""

from orchestrator.scheduler.jobs import run_persona_job

__all__ = ["run_persona_job"]
