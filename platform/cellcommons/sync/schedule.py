"""Cron schedules: five fields, evaluated in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter

from cellcommons.errors import InvalidInput


def check_schedule(schedule: str) -> str:
    schedule = " ".join(schedule.split())
    if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        raise InvalidInput(f"{schedule!r} is not a five-field cron expression (e.g. '*/15 * * * *')", field="schedule")
    return schedule


def next_fire(schedule: str, after: datetime) -> datetime:
    return croniter(schedule, after.astimezone(UTC)).get_next(datetime)
