"""Cron schedules: five fields, evaluated in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import CroniterError, croniter

from cellcommons.errors import InvalidInput


def check_schedule(schedule: str) -> str:
    schedule = " ".join(schedule.split())
    if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        raise InvalidInput(f"{schedule!r} is not a five-field cron expression (e.g. '*/15 * * * *')", field="schedule")
    try:
        next_fire(schedule, datetime.now(UTC))
    except CroniterError:  # valid fields that no date matches (31 February): it would never fire
        raise InvalidInput(f"{schedule!r} never fires: no date matches it", field="schedule") from None
    return schedule


def next_fire(schedule: str, after: datetime) -> datetime:
    return croniter(schedule, after.astimezone(UTC)).get_next(datetime)
