"""How well does the reply classifier read the Echo's replies, and how fast?

    .venv/bin/python bench/classifier_accuracy.py [--rules PATH] [--corpus PATH] [--acoustic PATH]
                                                  [--seeds 50] [--seconds 2]

Reported, on the labelled text corpus (tests/data/alexa_replies.yaml):
* accuracy overall, on the clean (real-world) phrasings and on their noisy copies (Vosk-like
  recognition errors, fixed seed), for the scorer of the rules file and, for comparison, the others;
* every mistake: expected -> classified (score, rule), with the reply;
* noise robustness: the noisy accuracy over fresh noise drawn with other seeds, since one draw of
  noise may be lucky or unlucky;
* speed: classifications per second, one core, rules already loaded.

and on the acoustic corpus (tests/data/alexa_replies_acoustic.yaml: replies spoken by Festival's HTS
voice and recognised by pocketsphinx, written by bench/acoustic_corpus.py):
* accuracy per outcome, on every reply and on the held-out ones (phrasings not used to write the rules);
* every mistake: expected -> classified, with the transcript that was heard and the text spoken;
* for `other_skill`: the other skill's name as spoken beside the name the classifier heard.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from rapidfuzz import fuzz  # noqa: E402
from reply_corpus import (  # noqa: E402
    ACOUSTIC_CORPUS,
    CORPUS,
    Accuracy,
    AcousticEntry,
    Entry,
    by_outcome,
    derive_noisy,
    evaluate,
    load_acoustic,
    load_corpus,
)

from orchestrator.runner.classify import OTHER_SKILL, SCORERS, Rules, load_rules  # noqa: E402

#: A heard name this close (token set ratio, 0-100) to the name spoken counts as the same name.
NAME_AGREES = 70


def classifier(rules: Rules):
    return lambda entry: tuple(rules.classify(entry.text, entry.kind, entry.skill, entry.invocation))


def split(entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
    return [e for e in entries if not e.noisy], [e for e in entries if e.noisy]


def line(label: str, result: Accuracy) -> str:
    return f"{label:<8} {result.ratio:7.1%}  ({result.right}/{result.total})"


def report_accuracy(rules: Rules, entries: list[Entry]) -> Accuracy:
    clean, noisy = split(entries)
    overall = evaluate(entries, classifier(rules))
    print(f"accuracy (scorer {rules.scorer}, threshold {rules.threshold:g}, tie margin {rules.tie_margin:g})")
    for label, subset in (("overall", entries), ("clean", clean), ("noisy", noisy)):
        print("  " + line(label, overall if subset is entries else evaluate(subset, classifier(rules))))
    return overall


def report_mistakes(result: Accuracy) -> None:
    print(f"\nmistakes ({len(result.mistakes)})")
    for m in result.mistakes:
        rule = m.rule or "no rule above the threshold"
        print(f"  {m.entry.id:<24} {m.entry.outcome:>19} -> {m.got:<19} {m.score:5.1f}  {rule}")
        print(f"  {'':<24} {m.entry.kind}: {m.entry.text[:100]!r}")
    pairs = Counter((m.entry.outcome, m.got) for m in result.mistakes)
    if pairs:
        print("  by pair: " + ", ".join(f"{a} -> {b} x{n}" for (a, b), n in pairs.most_common()))
    wrong_outcome = sum(1 for m in result.mistakes if m.got != "other")
    print(f"  confused with another outcome (not `other`): {wrong_outcome}")


def report_scorers(rules: Rules, entries: list[Entry]) -> None:
    clean, noisy = split(entries)
    print("\nscorers compared (same rules, threshold and tie margin)")
    for name in SCORERS:
        variant = rules.with_scorer(name)
        parts = [f"{label} {evaluate(subset, classifier(variant)).ratio:6.1%}"
                 for label, subset in (("overall", entries), ("clean", clean), ("noisy", noisy))]
        print(f"  {name:<10} " + "  ".join(parts) + ("   <- rules file" if name == rules.scorer else ""))


def report_noise_seeds(rules: Rules, clean: list[Entry], seeds: Iterable[int]) -> None:
    ratios = [evaluate(derive_noisy(clean, seed), classifier(rules)).ratio for seed in seeds]
    if not ratios:
        return
    print(f"\nnoisy accuracy over {len(ratios)} fresh noise draws (seeds 1..{len(ratios)})")
    print(f"  mean {statistics.mean(ratios):.1%}  median {statistics.median(ratios):.1%}  "
          f"min {min(ratios):.1%}  max {max(ratios):.1%}")


def _cell(result: Accuracy | None) -> str:
    if result is None or not result.total:
        return f"{'-':>16}"
    return f"{result.ratio:7.1%} {f'({result.right}/{result.total})':>8}"


def report_acoustic(rules: Rules, entries: list[AcousticEntry]) -> Accuracy:
    held = [e for e in entries if e.held_out]
    judge = classifier(rules)
    every, held_out = by_outcome(entries, judge), by_outcome(held, judge)
    overall, held_overall = evaluate(entries, judge), evaluate(held, judge)
    print(f"\nacoustic corpus: accuracy per outcome (scorer {rules.scorer})")
    print(f"  {'outcome':<20} {'all replies':>16}   {'held out':>16}")
    for outcome, result in every.items():
        print(f"  {outcome:<20} {_cell(result)}   {_cell(held_out.get(outcome))}")
    print(f"  {'overall':<20} {_cell(overall)}   {_cell(held_overall)}")
    return overall


def report_acoustic_mistakes(result: Accuracy) -> None:
    print(f"\nacoustic mistakes ({len(result.mistakes)})")
    for m in result.mistakes:
        entry = m.entry
        assert isinstance(entry, AcousticEntry)
        held = "  [held out]" if entry.held_out else ""
        print(f"  {entry.id:<26} {entry.outcome:>19} -> {m.got:<19} {m.score:5.1f}  {m.rule or '-'}{held}")
        print(f"  {'':<26} {entry.kind} {entry.skill!r} heard: {entry.transcript!r}")
        print(f"  {'':<26} spoken: {entry.spoken!r}")


def report_heard_names(rules: Rules, entries: list[AcousticEntry]) -> None:
    others = [e for e in entries if e.outcome == OTHER_SKILL]
    print(f"\nother_skill: the name spoken and the name heard ({len(others)} replies)")
    found = agree = 0
    for entry in others:
        verdict = rules.classify(entry.transcript, entry.kind, entry.skill, entry.invocation)
        heard = verdict.heard_skill if verdict.outcome == OTHER_SKILL else None
        found += heard is not None
        same = heard is not None and fuzz.token_set_ratio(heard, entry.heard_skill or "") >= NAME_AGREES
        agree += same
        print(f"  {entry.id:<14} {entry.heard_skill or '-':<22} {heard or '(' + verdict.outcome + ')':<28} "
              f"{'' if same else 'differs'}")
    print(f"  names heard for {found}/{len(others)}; close to the name spoken (token set >= {NAME_AGREES}): "
          f"{agree}/{len(others)}")


def report_speed(rules: Rules, entries: list[Entry], seconds: float) -> None:
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for entry in entries:
            rules.classify(entry.text, entry.kind, entry.skill, entry.invocation)
        count += len(entries)
    elapsed = time.perf_counter() - start
    patterns = len(rules.rules)
    print(f"\nspeed: {count / elapsed:,.0f} classifications/s ({elapsed / count * 1e6:.0f} µs each, "
          f"{patterns} patterns, mean reply {statistics.mean(len(e.text) for e in entries):.0f} characters)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=Path, help="a rules file (default: the packaged one)")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--acoustic", type=Path, default=ACOUSTIC_CORPUS, help="the acoustic corpus")
    parser.add_argument("--seeds", type=int, default=50, help="fresh noise draws for the robustness line")
    parser.add_argument("--seconds", type=float, default=2.0, help="how long to time classifications")
    args = parser.parse_args(argv)

    rules = load_rules(args.rules)
    entries = load_corpus(args.corpus)
    clean, _ = split(entries)
    print(f"corpus {args.corpus}: {len(entries)} replies ({len(clean)} clean, {len(entries) - len(clean)} noisy)")
    print(f"rules {rules.source}\n")
    result = report_accuracy(rules, entries)
    report_mistakes(result)
    report_scorers(rules, entries)
    report_noise_seeds(rules, clean, range(1, args.seeds + 1))
    report_speed(rules, entries, args.seconds)
    acoustic = load_acoustic(args.acoustic)
    print(f"\nacoustic corpus {args.acoustic}: {len(acoustic)} replies "
          f"({sum(e.held_out for e in acoustic)} held out), spoken by Festival, heard by pocketsphinx")
    report_acoustic_mistakes(report_acoustic(rules, acoustic))
    report_heard_names(rules, acoustic)
    return 0


if __name__ == "__main__":
    sys.exit(main())
