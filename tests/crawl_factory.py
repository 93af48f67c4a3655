"""Crawls of the US skill store at any size, in the two column styles public crawls use, with their mess.

Style 1 (a store-listing crawl): Name, Category, Author, Description, Rating, Num of Reviews, ASIN,
Application ID, Release Date, Invocation Name, Example Interaction 1-3, Privacy Policy, Terms of Use,
In-App Purchasing. Style 2 (a skill list): skill name, developer, invocation name, category,
sub-category, skill type, permissions (a list in one cell), account linking (text), reviews, rating,
sample utterances (a JSON list), retrieved.

The mess is the one real crawls have, in about their proportions: in-session follow-ups in the
example slots, quoted phrases, remarks in brackets, "null" for missing values, ratings and counts
written for people ("4.5 out of 5 stars", "1,234"), many skills sharing one invocation name
("cat facts"), smart-home and flash-briefing skills without an invocation name, a few rows that
are broken (a rating that is not a number, a custom skill without an invocation name).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

STYLE1 = ["Name", "Category", "Author", "Description", "Rating", "Num of Reviews", "ASIN", "Application ID",
          "Release Date", "Invocation Name", "Example Interaction 1", "Example Interaction 2", "Example Interaction 3",
          "Privacy Policy", "Terms of Use", "In-App Purchasing"]
STYLE2 = ["skill name", "developer", "invocation name", "category", "sub-category", "skill type", "permissions",
          "account linking", "reviews", "rating", "sample utterances", "retrieved"]

#: (category, sub-category, weight): the store's categories as crawls list them. Style 1 writes the
#: most specific name the listing page showed, so leaf names ("Dating") appear there too.
STORE = [
    ("Pets & Animals", "", 6), ("Health & Fitness", "", 8), ("Smart Home", "", 9), ("Connected Car", "", 3),
    ("Travel & Transportation", "Navigation & Trip Planners", 4), ("Travel & Transportation", "Translators", 2),
    ("Food & Drink", "Wine & Beverages", 3), ("Food & Drink", "Cooking & Recipes", 5),
    ("Lifestyle", "Dating", 2), ("Lifestyle", "Fashion & Style", 2), ("Lifestyle", "Religion & Spirituality", 3),
    ("Lifestyle", "Astrology", 3), ("Games & Trivia", "", 15), ("Education & Reference", "", 12), ("News", "", 8),
    ("Music & Audio", "", 6), ("Novelty & Humor", "", 7), ("Productivity", "", 5), ("Kids", "", 4),
]
WORDS = ["cat", "dog", "wine", "fit", "trip", "home", "light", "date", "style", "prayer", "quiz", "fact", "daily",
         "smart", "car", "coach", "guide", "tips", "radio", "news", "joke", "story", "yoga", "verse", "beer"]
FOLLOW_UPS = ["One", "Repeat", "Help", "Yes", "Next", "my token is a b c", "tell me another", "Start workout"]
PERMISSIONS = ["Device Address", "Customer Name", "Customer Email", "Device Location", "Lists Read Access"]


def _leaf(category: str, sub: str) -> str:
    return sub or category


def _skill(rng: random.Random, index: int) -> dict[str, object]:
    category, sub, _ = rng.choices(STORE, weights=[w for _, _, w in STORE])[0]
    name = " ".join(rng.sample(WORDS, 2)).title()
    invocation = "cat facts" if index % 97 == 0 else f"{name.lower()} {index}"
    kind = "Custom"
    if category == "Smart Home" and rng.random() < 0.4:
        kind, invocation = "Smart Home", ""
    elif category == "News" and rng.random() < 0.6:
        kind, invocation = "Flash Briefing", ""
    elif category == "Music & Audio" and rng.random() < 0.5:
        kind, invocation = "Music", ""
    samples = _samples(rng, kind, invocation, name)
    reviews = int(rng.paretovariate(1.2) * 3) - 3 if rng.random() > 0.15 else None
    return {"name": name if index % 53 else f"{name} Facts", "category": category, "sub": sub, "kind": kind,
            "developer": f"Developer {rng.randrange(900)}", "invocation": invocation, "samples": samples,
            "reviews": reviews, "rating": round(rng.uniform(1, 5), 1) if reviews else None,
            "asin": f"B0{index:08d}", "broken": index % 1000 == 999}


def _samples(rng: random.Random, kind: str, invocation: str, name: str) -> list[str]:
    if kind == "Smart Home":
        return ["Alexa, turn on the kitchen light", "Alexa, set the thermostat to 70", "Alexa, lock the front door"]
    if kind == "Flash Briefing":
        return ["Alexa, what's my flash briefing", "Alexa, what's in the news"]
    if kind == "Music":
        return [f"Alexa, play {name}", "Alexa, next song"]
    first = rng.choice([f"Alexa, open {invocation}", f"\"Alexa, ask {invocation} for a tip\"",
                        f"Alexa, ask {invocation} for a fact (To end the session, say stop)",
                        f"Alexa, tell {invocation} to start"])
    rest = rng.sample(FOLLOW_UPS, 2) if rng.random() < 0.5 else [f"Alexa, ask {invocation} for help", ""]
    return [first, *rest]


def skills(count: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [_skill(rng, index) for index in range(count)]


def _number(value: object, rng: random.Random) -> str:
    if value is None:
        return "null"
    return f"{value:,}" if isinstance(value, int) and rng.random() < 0.7 else str(value)


def write_style1(path: Path, count: int, seed: int = 7) -> Path:
    rng = random.Random(seed + 1)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(STYLE1)
        for skill in skills(count, seed):
            samples = [*skill["samples"], "", ""][:3]  # type: ignore[misc]
            rating = "great" if skill["broken"] else _number(skill["rating"], rng)
            invocation = skill["invocation"] or "null"
            if skill["broken"] and skill["kind"] == "Custom" and rng.random() < 0.5:
                rating, invocation = _number(skill["rating"], rng), "null"
            writer.writerow([
                skill["name"], _leaf(str(skill["category"]), str(skill["sub"])), skill["developer"],
                f"{skill['name']}: a skill.", rating, _number(skill["reviews"], rng),
                skill["asin"], f"amzn1.ask.skill.{skill['asin']}", "2021-06-01", invocation, *samples,
                "null" if rng.random() < 0.5 else "https://example.org/privacy", "null",
                rng.choice(["null", "No", "Yes"]),
            ])
    return path


def write_style2(path: Path, count: int, seed: int = 7) -> Path:
    rng = random.Random(seed + 2)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(STYLE2)
        for skill in skills(count, seed):
            permissions = rng.sample(PERMISSIONS, rng.randrange(3))
            writer.writerow([
                skill["name"], skill["developer"], skill["invocation"], skill["category"], skill["sub"], skill["kind"],
                repr(permissions), rng.choice(["Account linking required", "No account linking required", ""]),
                _number(skill["reviews"], rng), "" if skill["rating"] is None else skill["rating"],
                json.dumps([s for s in skill["samples"] if s]), "2021-09-14",  # type: ignore[attr-defined]
            ])
    return path
