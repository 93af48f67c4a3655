"""The personas: their files, schedules and the plan of their night (persona), and checking a lab's
files together before a night (validate)."""
