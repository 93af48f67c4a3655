"""Running personas: one persona's night on its Echo (run), many at once in worker processes (night),
what each reply meant (classify, with its rules in reply_rules.yaml) and how the plan reacts (reaction)."""
