"""How a plan reacts to what the Echo said.

After each reply the runner asks `PlanReaction.judge` what it meant (classify.py) and whether it
was what the step expected. The answers steer the rest of the night:

* a skill that could not be enabled (not found, account linking, permission, region, …) is not
  opened, talked to, stopped or disabled: those steps are logged as `skipped`, with the reason;
* a skill whose open did not land in it (another skill answered, it could not be reached, Alexa
  answered herself or did not understand) is not talked to inside its session: what would be said
  to it would reach the wrong skill, or no one. Its `stop` is still said (it ends whatever did
  open), and the next `open` of the skill tries again;
* a dialog turn that did not get its expected reply ends the dialog when `on_mismatch: stop`.

Every verdict comes from the transcript of the recorded reply: what the lab heard. Only the
replies the plan reacts to (`needs_words_now`) are decoded while they are recorded; the others are
transcribed later, in the background, and judged by `verdict_of` when their transcript arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.catalog.skills import Catalog
from orchestrator.plan.persona import PlannedStep
from orchestrator.runner.classify import Verdict, classify, expectation_met

CLASSIFIED_KINDS = ("enable", "open", "disable")
ENABLED = ("enabled", "already_enabled")
#: Open replies that mean the skill's session did not open. `other` (nothing matched) is not among
#: them: an unusual welcome must not cost the skill its night.
SESSION_NOT_OPEN = ("other_skill", "not_found", "unreachable", "not_understood", "alexa_answered")


def needs_words_now(step: PlannedStep) -> bool:
    """Whether the plan reacts to this step's reply, so its transcript is needed before the next step."""
    return step.kind in CLASSIFIED_KINDS or bool(step.expect)


def verdict_of(kind: str, text: str | None, status: str, skill_name: str | None = None,
               invocation: str | None = None) -> Verdict | None:
    """What a reply to a step of this kind meant; None for kinds the classifier does not judge."""
    if kind not in CLASSIFIED_KINDS:
        return None
    return classify(text, kind, skill_name=skill_name, invocation=invocation, status=status)


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict | None  # for enable, open and disable steps
    expectation_met: bool | None  # for steps with expected replies

    def fields(self) -> dict[str, object]:
        values: dict[str, object] = {"expectation_met": self.expectation_met}
        if self.verdict is not None:
            values |= {"reply_outcome": self.verdict.outcome, "reply_outcome_score": self.verdict.score,
                       "reply_outcome_rule": self.verdict.rule, "reply_heard_skill": self.verdict.heard_skill}
        return values


@dataclass
class PlanReaction:
    catalog: Catalog
    failed_skills: dict[str, str] = field(default_factory=dict)  # skill id -> why it is not usable
    closed_sessions: dict[str, str] = field(default_factory=dict)  # skill id -> why its session did not open
    ended_dialogs: set[int] = field(default_factory=set)

    def skip_reason(self, step: PlannedStep) -> str | None:
        if step.dialog is not None and step.dialog in self.ended_dialogs:
            return "an earlier turn of this dialog did not get its expected reply"
        if step.kind != "enable" and step.skill_id in self.failed_skills:
            return f"skill {step.skill_id} was not enabled: {self.failed_skills[step.skill_id]}"
        if not step.wake and step.skill_id in self.closed_sessions:
            return f"the session of skill {step.skill_id} did not open: {self.closed_sessions[step.skill_id]}"
        return None

    def learn_enable(self, skill_id: str, outcome: str | None) -> None:
        if outcome in ENABLED:
            self.failed_skills.pop(skill_id, None)
        else:
            self.failed_skills[skill_id] = outcome or "no verdict"

    def judge(self, step: PlannedStep, text: str | None, status: str) -> Judgement:
        verdict = self._classify(step, text, status)
        met = expectation_met(text or "", list(step.expect))[0] if step.expect else None
        if step.kind == "enable" and step.skill_id and verdict is not None:
            self.learn_enable(step.skill_id, verdict.outcome)
        if step.kind == "open" and step.skill_id and verdict is not None:
            self.learn_open(step.skill_id, verdict.outcome, verdict.heard_skill)
        if met is False and step.dialog is not None and step.on_mismatch == "stop":
            self.ended_dialogs.add(step.dialog)
        return Judgement(verdict, met)

    def learn_open(self, skill_id: str, outcome: str | None, heard_skill: str | None = None) -> None:
        if outcome not in SESSION_NOT_OPEN:
            self.closed_sessions.pop(skill_id, None)
        elif outcome == "other_skill":
            self.closed_sessions[skill_id] = f"another skill answered ({heard_skill or 'name not heard'})"
        else:
            self.closed_sessions[skill_id] = outcome

    def _classify(self, step: PlannedStep, text: str | None, status: str) -> Verdict | None:
        skill = self.catalog[step.skill_id] if step.skill_id is not None and step.skill_id in self.catalog else None
        return verdict_of(step.kind, text, status, skill.name if skill else None,
                          skill.invocation_name if skill else None)
