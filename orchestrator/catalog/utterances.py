"""Sample utterances as the store publishes them, made fit to be spoken.

Store listings write example phrases for people, not for a speaker: "Alexa, ask Cat Facts for a
fact.", but also "\"Alexa, open Drive Time\"", "Alexa, disarm (with PIN)" and bare in-session
follow-ups ("One", "Repeat", "my token is a b c") that only make sense while the skill is open.
Crawls keep the raw text; the import keeps it too (`sample_utterances_raw`) and stores the cleaned
form, which this module gives. The same functions run on curated phrases at plan time, so a
curated file may keep its phrases verbatim.
"""

from __future__ import annotations

import re
from typing import Literal

UtteranceKind = Literal["launch", "one-shot", "follow-up"]

#: Wake words a listing may start a phrase with. "Alexa" counts with or without a comma; the others
#: are ordinary words too ("echo", "amazon music"), so only a comma marks them as wake words.
_WAKE = re.compile(r"^\s*(?:alexa\b\s*[,.:!]?|(?:echo|computer|amazon|ziggy)\s*,)\s*", re.IGNORECASE)
_QUOTES = "\"'\u201c\u201d\u2018\u2019\u00ab\u00bb"
_REMARK = re.compile(r"\s*(?:\([^()]*\)|\[[^\[\]]*\])")
_SPACES = re.compile(r"\s+")
#: Verbs that only start a skill: "open cat facts" says nothing the open step does not.
_LAUNCH_VERBS = ("open", "launch", "start", "begin", "load", "run", "use", "talk to", "play", "enable")
#: What may be spoken: letters of any script, digits, spaces and ordinary punctuation. Anything else
#: (templates such as "{city}", "*", "#", emoji) is read oddly or not at all by a TTS voice.
_ODD = re.compile(r"[^\w\s.,;:'!?&\-/%$\u2019]|_")


def clean_utterance(text: str) -> str | None:
    """The words to speak: no wake word, no quotes around them, no bracketed remarks; None if empty."""
    previous = None
    cleaned = text
    while cleaned != previous:  # '"Alexa, "ask ..."' needs quotes and wake word taken off in turn
        previous = cleaned
        cleaned = _REMARK.sub("", cleaned)
        cleaned = cleaned.strip().strip(_QUOTES).strip()
        cleaned = _WAKE.sub("", cleaned)
    cleaned = _SPACES.sub(" ", cleaned).strip(" ,;:")
    return cleaned or None


def words_of(text: str) -> str:
    """Lower-case words only, for comparing what is spoken."""
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower().replace("&", " and ")).split())


def utterance_kind(text: str, invocation_name: str | None, name: str) -> UtteranceKind:
    """A launch ("open cat facts"), a one-shot invocation ("ask cat facts for a fact") or a follow-up.

    A phrase that names the skill (its invocation name, or its listed name, which listings often
    write instead) is spoken on its own with the wake word; one that does not is an answer or a
    request inside the open session ("one", "tell me a fact") and is spoken without it.
    """
    words = words_of(text)
    names = [n for n in {words_of(invocation_name or ""), words_of(name)} if n]
    for verb in _LAUNCH_VERBS:
        if words.startswith(verb + " ") and words[len(verb) + 1:].removeprefix("the ") in names:
            return "launch"
    padded = f" {words} "
    if any(f" {n} " in padded for n in names):
        return "one-shot"
    return "follow-up"


def odd_characters(text: str) -> str:
    """The characters of a prompt a voice would stumble on, each once, in order."""
    return "".join(dict.fromkeys(_ODD.findall(text)))


def invocation_key(invocation_name: str | None) -> str | None:
    """Invocation names as Alexa hears them: "Cat Facts", "cat facts." and "cat-facts" are one."""
    key = " ".join(re.sub(r"[^\w]+", " ", (invocation_name or "").lower()).split())
    return key or None
