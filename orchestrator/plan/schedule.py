"""When a persona runs: its file's crontab schedule, in its own time zone, as APScheduler triggers.

A persona file is validated with the same trigger the scheduler later runs it with, so this module
stays light: APScheduler's triggers only, neither its schedulers nor the job store.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Self
from zoneinfo import ZoneInfo

# APScheduler 3 ships no type information.
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from orchestrator.plan.persona import Schedule

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: Bounds the missed runs recorded for one persona after a long outage (a year of nights).
MAX_RECORDED_MISSES = 366


class NightlyTrigger(CronTrigger):  # type: ignore[misc]  # CronTrigger is untyped
    """A crontab schedule in a persona's time zone that fires once per wall-clock time.

    When clocks go back, a wall time such as 01:25 happens twice; APScheduler 3 fires at both, which
    would run a persona's night twice. The second occurrence is skipped, as cron does. A wall time
    that does not exist when clocks go forward fires once, at the same distance after the change.
    """

    __slots__ = ()

    @classmethod
    def from_crontab(cls, expr: str, timezone: tzinfo | str | None = None, jitter: int | None = None) -> Self:
        """Crontab semantics, unlike APScheduler's own from_crontab (which counts weekdays from Monday)."""
        minute, hour, day, month, weekdays = _crontab_fields(expr)
        if day != "*" and weekdays != "*":
            # crontab runs when either field matches, APScheduler only when both do.
            raise ValueError("restrict the day of the month or the day of the week, not both")
        return cls(minute=minute, hour=hour, day=day, month=month, day_of_week=crontab_weekdays(weekdays),
                   timezone=timezone, jitter=jitter or None)

    def _apply_jitter(self, next_fire_time: datetime | None, jitter: int | None, now: datetime) -> datetime | None:
        # The one hook that sees each fire time before jitter is added.
        moment: datetime | None
        if next_fire_time is not None and repeated_wall_time(next_fire_time, self.timezone):
            moment = self.get_next_fire_time(next_fire_time, next_fire_time)
        else:
            moment = super()._apply_jitter(next_fire_time, jitter, now)
        return moment


def _crontab_fields(expr: str) -> list[str]:
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError("cron needs five fields: minute hour day-of-month month day-of-week")
    return fields


def crontab_weekdays(spec: str) -> str:
    """A crontab day-of-week field (Sunday = 0 or 7) as APScheduler day names.

    APScheduler 3 numbers weekdays from Monday = 0, so "0 1 * * 0" would run on Mondays; names mean
    the same to both.
    """
    if spec == "*":
        return "*"
    days: set[int] = set()
    for part in spec.split(","):
        days |= _weekday_set(part)
    return ",".join(_CRON_DAYS[d] for d in sorted(days, key=lambda d: (d - 1) % 7))


def _weekday_set(part: str) -> set[int]:
    base, _, step_text = part.partition("/")
    step = int(step_text) if step_text else 1
    if step < 1:
        raise ValueError(f"bad step in day of week {part!r}")
    if base == "*":
        first, last = 0, 6
    else:
        start, _, end = base.partition("-")
        first = _weekday_number(start)
        last = _weekday_number(end) if end else (6 if step_text else first)
        if end and last == 0 and first > 0:
            last = 7  # "fri-sun": Sunday closes the week
    if first > last:
        raise ValueError(f"day-of-week range {part!r} runs backwards")
    return {day % 7 for day in range(first, last + 1, step)}


def _weekday_number(text: str) -> int:
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    if text.lower() in _CRON_DAYS:
        return _CRON_DAYS.index(text.lower())
    raise ValueError(f"unknown day of week {text!r} (0-7 or sun..sat)")


def repeated_wall_time(moment: datetime, zone: tzinfo) -> bool:
    """True for the second occurrence of a wall time that clocks going back repeat."""
    wall = moment.astimezone(zone).replace(tzinfo=None)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    same_wall = first.astimezone(zone).replace(tzinfo=None) == wall
    return same_wall and first < moment.astimezone(UTC)


def nightly_trigger(schedule: Schedule) -> NightlyTrigger:
    return NightlyTrigger.from_crontab(schedule.cron, timezone=ZoneInfo(schedule.timezone),
                                       jitter=schedule.jitter_minutes * 60)


def fire_times(trigger: CronTrigger, first: datetime, now: datetime,
               limit: int = MAX_RECORDED_MISSES) -> list[datetime]:
    """The fire times from `first` up to `now`, as the scheduler would have met them."""
    times: list[datetime] = []
    moment: datetime | None = first
    while moment is not None and moment <= now and len(times) < limit:
        times.append(moment)
        moment = trigger.get_next_fire_time(moment, now)
    return times
