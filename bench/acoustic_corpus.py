"""Labelled Echo replies as a lab hears them: spoken by Festival's HTS voice, recognised by pocketsphinx.

    .venv/bin/python bench/acoustic_corpus.py --write      # render and decode new replies, write the file
    .venv/bin/python bench/acoustic_corpus.py --write --fresh   # render and decode every reply again
    .venv/bin/python bench/acoustic_corpus.py --list       # the entries that would be rendered, no audio

Writes tests/data/alexa_replies_acoustic.yaml: for each reply the step kind, the skill invoked, the
outcome (and, for `other_skill`, the name of the other skill as spoken), the text that was spoken
and the transcript that was heard. The classifier is tested on the transcript, so the tests need
neither Festival nor the audio.

The replies come from three places:
* every phrasing of the simulated Echo (orchestrator/sim/replies.yaml), filled with several skills;
* the clean (real-world) entries of the text corpus, tests/data/alexa_replies.yaml;
* phrasings written here: a development set, used while writing the rules, and a held-out set,
  written before the rules and not used to tune them (`held_out: true`), which measures how the
  rules carry over to phrasings nobody fitted them to. Held-out sets were written in three rounds:
  after a round was measured (79.6 %, then 88.1 %), its misses were used to widen the rules, so its
  phrasings count as development ones (ROUND1, ROUND2), and a new held-out set was written before
  the rules changed again (HELD_OUT).

Rendering needs Debian's `festival` and `festvox-us-slt-hts`; about a second per reply.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from reply_corpus import ACOUSTIC_CORPUS, load_corpus  # noqa: E402

from orchestrator.runner.classify import normalise  # noqa: E402

SIM_REPLIES = ROOT / "orchestrator" / "sim" / "replies.yaml"
VOICE = "(voice_cmu_us_slt_arctic_hts)"
RATE = 16_000
SIM_FILLS = 4
WRITTEN_FILLS = 2


@dataclass(frozen=True)
class Skill:
    name: str
    invocation: str


#: Skills the steps invoke: one-word brand names and multi-word names, several of which the
#: recogniser garbles (SkyBell, Nightscout, Akinator, Purina).
SKILLS: tuple[Skill, ...] = (
    Skill("Cat Facts", "cat facts"),
    Skill("SkyBell", "sky bell"),
    Skill("The Dog Feeder", "dog feeder"),
    Skill("Nightscout", "night scout"),
    Skill("Daily Horoscopes", "daily horoscopes"),
    Skill("Akinator", "akinator"),
    Skill("Sleep Sounds Ocean Waves", "ocean waves"),
    Skill("Purina Pet Expert", "purina pet expert"),
    Skill("Wine Pairing", "wine pairing"),
)

#: Skills that answer instead of the one invoked.
OTHERS: tuple[str, ...] = (
    "Smart Restaurant", "Song Quiz", "Question of the Day", "Big Sky", "Chompers", "Tasty Recipes",
    "Jeopardy", "Sleep Jar", "Kids Court", "Trivia Hero", "Lemonade Stand",
)


@dataclass(frozen=True)
class Phrasing:
    """A reply with placeholders ({skill}, {invocation}, {other}), what it means, and where it is from."""

    outcome: str
    kinds: tuple[str, ...]
    text: str
    held_out: bool = False
    origin: str = "written for this corpus"
    fills: int | None = None  # how many skills to say it with, when not the default of its set


def _dev(outcome: str, kinds: str, text: str) -> Phrasing:
    return Phrasing(outcome, tuple(kinds.split()), text, held_out=False)


def _held(outcome: str, kinds: str, text: str, fills: int | None = None) -> Phrasing:
    return Phrasing(outcome, tuple(kinds.split()), text, held_out=True, fills=fills)


def _round1(outcome: str, kinds: str, text: str) -> Phrasing:
    return Phrasing(outcome, tuple(kinds.split()), text, held_out=False, origin=ROUND1_ORIGIN)


def _round2(outcome: str, kinds: str, text: str) -> Phrasing:
    return Phrasing(outcome, tuple(kinds.split()), text, held_out=False, origin=ROUND2_ORIGIN)


ROUND1_ORIGIN = "written for this corpus; held out in a first round, then used to write the rules"
ROUND2_ORIGIN = "written for this corpus; held out in a second round, then used to write the rules"


#: Used while writing the rules.
DEVELOPMENT: tuple[Phrasing, ...] = (
    _dev("enabled", "enable", "All right, {skill} has been enabled."),
    _dev("already_enabled", "enable", "{skill} is already enabled. To use it, say open {invocation}."),
    _dev("already_enabled", "enable", "You've already enabled {skill}."),
    _dev("disabled", "disable", "Okay, {skill} is now disabled."),
    _dev("not_found", "enable open", "Sorry, I can't find a skill called {invocation}."),
    _dev("account_linking", "open enable", "You'll need to link your account in the Alexa app to use {skill}."),
    _dev("account_linking", "enable open",
         "{skill} needs you to link your account. I've sent a card to your Alexa app."),
    _dev("permission_required", "open ask",
         "To do that, {skill} needs permission to use your location. I've sent a card to the Alexa app."),
    _dev("permission_required", "ask open",
         "Please grant permission in the Alexa app so {skill} can find your address."),
    _dev("not_available", "enable", "Sorry, {skill} isn't available in your region."),
    _dev("skill_opened", "open", "Welcome back to {skill}. What would you like to do?"),
    _dev("skill_opened", "open", "Hi, welcome to {skill}! You can say, give me a tip."),
    _dev("skill_opened", "open", "Welcome to the {skill} skill. How can I help?"),
    _dev("other_skill", "open", "Welcome back to {other}. What would you like to do today?"),
    _dev("other_skill", "open ask", "Hi, welcome to {other}! You can ask me for today's special."),
    _dev("other_skill", "open", "Welcome to the {other} skill. Say start to begin."),
    _dev("unreachable", "open ask", "Hmm, {skill} isn't responding right now."),
    _dev("unreachable", "open say", "Sorry, {skill} is not responding. Please try again later."),
    _dev("alexa_answered", "open",
         "Here's what I found. According to Wikipedia, {invocation} is a phrase with several meanings."),
    _dev("alexa_answered", "open ask", "According to Wikipedia, {invocation} is the name of several products."),
    _dev("alexa_answered", "open",
         "Here's something I found on the web. According to wikiHow, you should start slowly."),
    _dev("not_understood", "open ask", "Hmm, I don't know that."),
    _dev("not_understood", "ask say", "Sorry, I'm not sure what you meant."),
    _dev("error", "open ask", "Sorry, there was a problem. Please try again later."),
    _dev("other", "open", "Shuffling songs by Cat Stevens from Amazon Music."),
    _dev("other", "open enable", "The time is ten twenty p.m."),
)

#: Written before the rules and held out at first: the rules reached 79.6 % on them (78/98).
#: Their misses were then used to widen the rules, so they are development phrasings now, and a
#: new held-out set (HELD_OUT) was written before that change.
ROUND1: tuple[Phrasing, ...] = (
    _round1("enabled", "enable", "{skill} is enabled. To get started, say open {invocation}."),
    _round1("enabled", "enable", "Okay, I've enabled {skill} for you."),
    _round1("already_enabled", "enable", "{skill} is already enabled on this account."),
    _round1("already_enabled", "enable", "Looks like {skill} is already enabled. Say open {invocation} to start."),
    _round1("already_enabled", "enable", "You already enabled {skill}. Just say open {invocation}."),
    _round1("disabled", "disable", "Okay, {skill} is disabled."),
    _round1("disabled", "disable", "Done. I've disabled {skill}."),
    _round1("disabled", "disable", "{skill} has been disabled. You can enable it again any time."),
    _round1("not_found", "enable open", "Hmm, I can't find a skill by that name."),
    _round1("not_found", "enable disable", "Sorry, I couldn't find a skill named {invocation}."),
    _round1("not_found", "enable open", "I wasn't able to find that skill."),
    _round1("account_linking", "open ask", "To continue, please link your {skill} account in the Alexa app."),
    _round1("account_linking", "enable open",
            "Your account isn't linked yet. I've sent a card to the Alexa app to help you link it."),
    _round1("account_linking", "open",
            "Before we start, you need to link your account. Check the Alexa app for details."),
    _round1("permission_required", "open ask",
            "To get your forecast, I need permission to use your location. You can turn it on in the Alexa app."),
    _round1("permission_required", "open enable",
            "{skill} would like to know your first name. To allow this, go to the Alexa app and grant permission."),
    _round1("permission_required", "ask open",
            "I don't have permission to access your address. Please enable it in the Alexa app."),
    _round1("not_available", "enable", "Sorry, that skill is not available in your country."),
    _round1("not_available", "enable open", "{skill} isn't available in your region yet."),
    _round1("not_available", "enable", "Sorry, {skill} is not available on this device."),
    _round1("skill_opened", "open", "Hello and welcome to {skill}. Let's get started."),
    _round1("skill_opened", "open", "Thanks for opening {skill}. What can I do for you?"),
    _round1("skill_opened", "open", "Hey there! Welcome back to {skill}. Ready to play?"),
    _round1("skill_opened", "open", "Welcome to {skill}! Would you like to hear a tip?"),
    _round1("skill_opened", "open", "{skill} here. What would you like to know?"),
    _round1("other_skill", "open", "Hello, and welcome to {other}. Let's get started."),
    _round1("other_skill", "open", "Welcome to {other}! Would you like to hear today's top story?"),
    _round1("other_skill", "open ask", "Thanks for opening {other}. What can I do for you?"),
    _round1("other_skill", "open", "Hey there! Welcome back to {other}. Ready to play?"),
    _round1("other_skill", "open", "Welcome to {other}, the best place for recipes. What are you hungry for?"),
    _round1("unreachable", "open", "Sorry, I'm having trouble reaching {skill} right now."),
    _round1("unreachable", "open ask", "I'm sorry, {skill} is not responding at the moment."),
    _round1("unreachable", "open say", "The {skill} skill isn't responding. Try again in a little while."),
    _round1("unreachable", "open", "Sorry, I couldn't reach {skill}. Please try again later."),
    _round1("unreachable", "ask open", "Hmm, {skill} isn't responding."),
    _round1("alexa_answered", "open", "Here's what I found on the web: {invocation} can refer to many things."),
    _round1("alexa_answered", "open ask", "According to an Alexa Answers contributor, {invocation} is a fun topic."),
    _round1("alexa_answered", "open", "Here's a summary from Wikipedia: {invocation} is a term used in many places."),
    _round1("alexa_answered", "open ask",
            "According to reference dot com, {invocation} are very popular with families."),
    _round1("alexa_answered", "open", "Here's something I found on Wikipedia. {invocation} has a long history."),
    _round1("not_understood", "open ask", "Sorry, I didn't understand that."),
    _round1("not_understood", "ask say", "Hmm, I don't have an answer for that."),
    _round1("not_understood", "open say", "Sorry, I'm not sure how to help with that."),
    _round1("not_understood", "open ask", "I'm sorry, I don't know that one."),
    _round1("not_understood", "ask open", "Hmm, I don't know about that."),
    _round1("error", "open ask", "Sorry, something went wrong. Please try again."),
    _round1("error", "open", "There was a problem with the response from the skill."),
    _round1("error", "ask open", "Sorry, there was an error. Please try again in a few minutes."),
    _round1("other", "open", "It's seventy two degrees and sunny in Seattle."),
    _round1("other", "open", "Shuffling songs by Bob Marley from Amazon Music."),
    _round1("other", "enable open", "Your next alarm is at seven a.m."),
    _round1("other", "open", "Now playing lab radio."),
)

#: Written before the rules were widened with ROUND1's misses and held out: the rules reached
#: 88.1 % on them (74/84). Their misses were then used too, and a third set (HELD_OUT) was written
#: before that change.
ROUND2: tuple[Phrasing, ...] = (
    _round2("enabled", "enable", "Got it. {skill} is now enabled. Try saying, open {invocation}."),
    _round2("enabled", "enable", "The {skill} skill has been enabled. Would you like to open it now?"),
    _round2("already_enabled", "enable", "{skill} is already enabled. Would you like to open it?"),
    _round2("already_enabled", "enable", "You already have that skill enabled."),
    _round2("disabled", "disable", "Okay, {skill} has been disabled and removed from your skills."),
    _round2("disabled", "disable", "All right, {skill} is now disabled."),
    _round2("not_found", "enable open", "Sorry, I couldn't find a skill matching {invocation}."),
    _round2("not_found", "enable disable", "Hmm, I don't see a skill called {invocation}."),
    _round2("not_found", "open enable", "I couldn't find that skill in the skill store."),
    _round2("account_linking", "enable open",
            "To use this skill, you'll need to link your account. I've sent details to the Alexa app."),
    _round2("account_linking", "open ask",
            "It looks like your account isn't linked. Please link your {skill} account in the Alexa app."),
    _round2("account_linking", "enable open",
            "{skill} requires account linking. Open the Alexa app to finish setting it up."),
    _round2("permission_required", "open ask",
            "{skill} needs your permission to access your email address. Please grant it in the Alexa app."),
    _round2("permission_required", "ask open",
            "To continue, please allow {skill} to use your location in the Alexa app."),
    _round2("not_available", "enable open", "Sorry, {skill} is not available in your area."),
    _round2("not_available", "enable", "This skill isn't available in your country yet."),
    _round2("skill_opened", "open", "Hi! This is {skill}. How can I help you today?"),
    _round2("skill_opened", "open", "Welcome to {skill}. To hear a fact, say tell me a fact."),
    _round2("skill_opened", "open", "Good evening, and welcome back to {skill}! Shall we continue where we left off?"),
    _round2("skill_opened", "open", "Hello! Welcome back to {skill}. It's great to hear from you again."),
    _round2("other_skill", "open", "Good evening, and welcome back to {other}! Shall we continue where we left off?"),
    _round2("other_skill", "open ask", "Welcome to {other}. To hear a fact, say tell me a fact."),
    _round2("other_skill", "open", "Hi! Welcome to {other}, your daily dose of fun. Want to play?"),
    _round2("other_skill", "open", "Welcome to {other}. Say help to hear what I can do."),
    _round2("other_skill", "open", "Hello! Welcome back to {other}. It's great to hear from you again."),
    _round2("unreachable", "open ask", "Sorry, {skill} isn't responding at the moment. Try again soon."),
    _round2("unreachable", "open", "Hmm, I'm having trouble accessing {skill} right now."),
    _round2("unreachable", "say open", "{skill} is not responding right now."),
    _round2("unreachable", "open", "Sorry, I'm having trouble reaching your {skill} skill."),
    _round2("unreachable", "open ask", "The skill {skill} is not responding. Please try again later."),
    _round2("alexa_answered", "open", "Here's what I found: {invocation} is a term with several meanings."),
    _round2("alexa_answered", "open ask",
            "According to Wikipedia, {invocation} has been around since the nineteen nineties."),
    _round2("alexa_answered", "open", "I found this on the web. {invocation} are loved by millions of people."),
    _round2("alexa_answered", "open ask", "From the web: {invocation} is a popular search term."),
    _round2("alexa_answered", "open", "Here's something I found on the web: {invocation} can be a lot of fun."),
    _round2("not_understood", "open ask", "Sorry, I'm not sure about that one."),
    _round2("not_understood", "ask say", "Hmm, I don't know that one."),
    _round2("not_understood", "open say", "I'm sorry, I didn't catch that."),
    _round2("not_understood", "ask open", "Sorry, I don't know how to help with that yet."),
    _round2("not_understood", "say ask", "Hmm, I'm not sure what you're asking."),
    _round2("error", "open ask", "Sorry, something went wrong with that skill."),
    _round2("error", "open", "There was a problem with the requested skill's response. Please try again."),
    _round2("other", "open", "Setting a timer for ten minutes."),
    _round2("other", "open", "Here is the weather for Seattle: sunny, seventy degrees."),
    _round2("other", "open enable", "Playing the news from NPR."),
)

#: Written before the rules were widened with ROUND2's misses, and never used to tune them. Replies
#: the rules already read well get one skill each, the new outcomes and welcomes two.
HELD_OUT: tuple[Phrasing, ...] = (
    _held("enabled", "enable", "Okay, {skill} is enabled and ready to use.", fills=1),
    _held("enabled", "enable", "Alright, {skill} is now enabled. Just say, Alexa, open {invocation}.", fills=1),
    _held("already_enabled", "enable", "It looks like {skill} is already enabled on your account.", fills=1),
    _held("disabled", "disable", "Okay, {skill} is now disabled on your account.", fills=1),
    _held("not_found", "enable", "Sorry, I couldn't find a skill by that name.", fills=1),
    _held("not_found", "enable", "Hmm, I'm not finding a skill called {invocation}.", fills=1),
    _held("not_found", "open", "I can't find that skill. Check the Alexa app for the exact name.", fills=1),
    _held("account_linking", "open", "Please visit the Alexa app to link your {skill} account.", fills=1),
    _held("account_linking", "enable",
          "You haven't linked your account yet. Go to the skills section of the Alexa app to link it.", fills=1),
    _held("account_linking", "open",
          "To use {skill}, you'll first need to link your account using the Alexa app.", fills=1),
    _held("permission_required", "open",
          "{skill} needs access to your location. Please enable location sharing in the Alexa app.", fills=1),
    _held("permission_required", "ask",
          "I need permission to access your email address. Please grant permission in the Alexa app.", fills=1),
    _held("permission_required", "open",
          "To do this, {skill} requires permission to access your name. I've sent a card to your Alexa app.",
          fills=1),
    _held("not_available", "enable", "Sorry, {skill} isn't available in your location.", fills=1),
    _held("not_available", "enable", "That skill is not available in your region.", fills=1),
    _held("skill_opened", "open", "Welcome to {skill}! What can I help you with today?"),
    _held("skill_opened", "open", "Hey, welcome back to {skill}. Would you like to continue?"),
    _held("skill_opened", "open", "Welcome to {skill}. Ask me anything about it, or say help."),
    _held("skill_opened", "open", "Hi, I'm {skill}. What would you like to do?"),
    _held("other_skill", "open", "Welcome to {other}! What can I help you with today?"),
    _held("other_skill", "open", "Hey, welcome back to {other}. Would you like to continue?"),
    _held("other_skill", "open ask", "Welcome to {other}. Ask me anything, or say help."),
    _held("other_skill", "open", "Welcome back to {other}! Ready for today's challenge?"),
    _held("other_skill", "open", "Hello and welcome to {other}, where every day is a new adventure."),
    _held("unreachable", "open ask", "Sorry, {skill} isn't responding right now."),
    _held("unreachable", "open", "{skill} isn't responding. Please try again in a few minutes."),
    _held("unreachable", "open", "Hmm, I'm having trouble accessing your {skill} skill. Please try again later."),
    _held("unreachable", "open ask", "Sorry, I'm having trouble connecting to {skill} right now."),
    _held("alexa_answered", "open", "According to Wikipedia, {invocation} refers to several things."),
    _held("alexa_answered", "open ask",
          "Here's what I found on Wikipedia: {invocation} is popular in the United States."),
    _held("alexa_answered", "open",
          "Here's something I found on the web. {invocation} is a term many people search for."),
    _held("alexa_answered", "open", "According to Alexa Answers, {invocation} is a great way to pass the time."),
    _held("alexa_answered", "open ask", "Here's what I found from the web: {invocation} are fun for the whole family."),
    _held("not_understood", "open", "Sorry, I'm not sure.", fills=1),
    _held("not_understood", "ask", "Hmm, I don't know that.", fills=1),
    _held("not_understood", "say", "Sorry, I didn't get that.", fills=1),
    _held("not_understood", "open", "I'm not sure how to help you with that.", fills=1),
    _held("not_understood", "ask", "Sorry, I don't have the answer to that question.", fills=1),
    _held("error", "open", "Sorry, there was a problem with the skill you requested.", fills=1),
    _held("error", "ask", "Something went wrong. Please try again later.", fills=1),
    _held("error", "open", "There was a problem with the requested skill's response.", fills=1),
    _held("other", "open", "The time is eleven fifteen a.m.", fills=1),
    _held("other", "open", "Okay, stopping.", fills=1),
    _held("other", "open", "Playing relaxing music from Amazon Music.", fills=1),
)


@dataclass(frozen=True)
class Spec:
    """One reply to render: everything but the transcript."""

    id: str
    kind: str
    outcome: str
    skill: str
    invocation: str | None
    spoken: str
    held_out: bool
    origin: str
    heard_skill: str | None = None


# -- what to say -----------------------------------------------------------------------------------


def sim_phrasings(path: Path = SIM_REPLIES) -> list[Phrasing]:
    """Every phrasing of the simulated Echo; `any` replies are met by questions asked in a session."""
    steps = yaml.safe_load(path.read_text(encoding="utf-8"))
    origin = str(path.relative_to(ROOT))
    return [
        Phrasing(outcome, ("ask", "say") if step == "any" else (step,), " ".join(parts), origin=origin)
        for step, situations in steps.items()
        for outcome, phrasings in situations.items()
        for parts in phrasings
    ]


def _fill(phrasing: Phrasing, skill: Skill, other: str) -> str:
    return phrasing.text.format(skill=skill.name, invocation=skill.invocation, other=other)


def _fills(phrasings: list[Phrasing] | tuple[Phrasing, ...], count: int, prefix: str) -> Iterator[Spec]:
    # Successive phrasings start at different skills, so every skill meets most outcomes.
    for number, phrasing in enumerate(phrasings, 1):
        for fill in range(phrasing.fills or count):
            skill = SKILLS[(number * 2 + fill) % len(SKILLS)]
            other = OTHERS[(number + fill * 3) % len(OTHERS)]
            kind = phrasing.kinds[fill % len(phrasing.kinds)]
            yield Spec(
                id=f"{prefix}-{number:02d}{chr(ord('a') + fill)}", kind=kind, outcome=phrasing.outcome,
                skill=skill.name, invocation=skill.invocation, spoken=_fill(phrasing, skill, other),
                held_out=phrasing.held_out, origin=phrasing.origin,
                heard_skill=normalise(other) if phrasing.outcome == "other_skill" else None,
            )


def _text_corpus() -> Iterator[Spec]:
    for entry in load_corpus():
        if not entry.noisy:
            yield Spec(id=f"text-{entry.id}", kind=entry.kind, outcome=entry.outcome, skill=entry.skill or "",
                       invocation=entry.invocation, spoken=entry.text, held_out=False,
                       origin=f"tests/data/alexa_replies.yaml {entry.id}", heard_skill=entry.heard_skill)


def specs() -> list[Spec]:
    """Every reply to render, once: a phrasing without a name sounds the same whatever the skill."""
    seen: set[tuple[str, str]] = set()
    unique: list[Spec] = []
    for spec in (*_fills(sim_phrasings(), SIM_FILLS, "sim"), *_text_corpus(),
                 *_fills(DEVELOPMENT, WRITTEN_FILLS, "dev"), *_fills(ROUND1, WRITTEN_FILLS, "round1"),
                 *_fills(ROUND2, WRITTEN_FILLS, "round2"), *_fills(HELD_OUT, WRITTEN_FILLS, "held")):
        if (spec.kind, spec.spoken) not in seen:
            seen.add((spec.kind, spec.spoken))
            unique.append(spec)
    return unique


# -- speaking and hearing --------------------------------------------------------------------------


def speak(text: str) -> np.ndarray:
    """16 kHz mono int16 samples of `text` in Festival's HTS voice (rendered at 32 kHz, resampled)."""
    import soxr

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reply.wav"
        subprocess.run(["text2wave", "-eval", VOICE, "-o", str(path)], input=text.encode(), check=True,
                       capture_output=True)
        with wave.open(str(path)) as wav:
            rate, channels = wav.getframerate(), wav.getnchannels()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    mono = samples.reshape(-1, channels).mean(axis=1) / 32768.0
    resampled = soxr.resample(mono, rate, RATE) if rate != RATE else mono
    return (np.clip(resampled, -1.0, 1.0) * 32767).astype(np.int16)


class Ear:
    """pocketsphinx with its bundled US-English model, loaded once."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=RATE)

    def hear(self, pcm: np.ndarray) -> str:
        self._decoder.start_utt()
        self._decoder.process_raw(pcm.tobytes(), full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""


# -- the corpus file -------------------------------------------------------------------------------

HEADER = """\
# Echo replies as a lab hears them, for orchestrator/runner/classify.py (tests/test_classify.py asserts its
# accuracy on them; bench/classifier_accuracy.py reports it). Generated by
#     .venv/bin/python bench/acoustic_corpus.py --write
# which speaks each reply with Festival's HTS voice (cmu_us_slt_arctic_hts), resamples it to 16 kHz
# and recognises it with pocketsphinx's bundled US-English model. Do not edit by hand.
#
# Each entry: the step kind, the skill invoked, what the reply means (outcome; for other_skill also
# heard_skill, the other skill's name as spoken, normalised), the text that was `spoken` and the
# `transcript` that was heard; the classifier reads the transcript. `origin` says where the
# phrasing comes from. `held_out: true` marks phrasings written before the rules and never used to
# tune them; the others (the simulated Echo's, the text corpus's, a development set and two earlier
# held-out rounds, measured and then used) were.
"""


def _entry_lines(spec: Spec, transcript: str) -> list[str]:
    fields: dict[str, object] = {
        "id": spec.id, "kind": spec.kind, "outcome": spec.outcome, "skill": spec.skill,
        "invocation": spec.invocation, "heard_skill": spec.heard_skill, "held_out": spec.held_out,
        "origin": spec.origin, "spoken": spec.spoken, "transcript": transcript,
    }
    lines = [f"  - id: {json.dumps(spec.id)}"]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in fields.items() if key != "id" and value is not None]
    return lines


def heard_before(path: Path) -> dict[str, str]:
    """The transcripts of a corpus file, by the text spoken: the same voice and recogniser hear the same."""
    if not path.exists():
        return {}
    entries = yaml.safe_load(path.read_text(encoding="utf-8")).get("entries") or []
    return {entry["spoken"]: entry["transcript"] for entry in entries}


def write(path: Path, todo: list[Spec], known: dict[str, str]) -> None:
    ear: Ear | None = None
    lines = [HEADER, "entries:"]
    start = time.monotonic()
    for number, spec in enumerate(todo, 1):
        transcript = known.get(spec.spoken)
        if transcript is None:
            ear = ear or Ear()
            transcript = known[spec.spoken] = ear.hear(speak(spec.spoken))
            print(f"{number:4d}/{len(todo)} {time.monotonic() - start:6.0f}s {spec.id:<22} {transcript}", flush=True)
        lines += _entry_lines(spec, transcript)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"render, decode and write {ACOUSTIC_CORPUS.name}")
    parser.add_argument("--list", action="store_true", help="print the replies that would be rendered")
    parser.add_argument("--out", type=Path, default=ACOUSTIC_CORPUS)
    parser.add_argument("--fresh", action="store_true",
                        help="render every reply again (by default the transcripts already in --out are kept)")
    args = parser.parse_args(argv)
    todo = specs()
    if args.list or not args.write:
        for spec in todo:
            print(f"{spec.id:<22} {spec.kind:<8} {spec.outcome:<20} {'held' if spec.held_out else '':<5} {spec.spoken}")
        counts = Counter(spec.outcome for spec in todo)
        print(f"\n{len(todo)} replies ({sum(s.held_out for s in todo)} held out): "
              + ", ".join(f"{o} {n}" for o, n in sorted(counts.items())))
        return 0
    write(args.out, todo, {} if args.fresh else heard_before(args.out))
    print(f"wrote {len(todo)} replies to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
