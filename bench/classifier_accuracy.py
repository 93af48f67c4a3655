"""How well does the reply classifier read the Echo's replies, and how fast?

    .venv/bin/python bench/classifier_accuracy.py [--rules PATH] [--corpus PATH] [--seeds 50] [--seconds 2]

Reported, on the labelled corpus (tests/data/alexa_replies.yaml):
* accuracy overall, on the clean (real-world) phrasings and on their noisy copies (Vosk-like
  recognition errors, fixed seed), for the scorer of the rules file and, for comparison, the others;
* every mistake: expected -> classified (score, rule), with the reply;
* noise robustness: the noisy accuracy over fresh noise drawn with other seeds, since one draw of
  noise may be lucky or unlucky;
* speed: classifications per second, one core, rules already loaded.
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

from reply_corpus import CORPUS, Accuracy, Entry, derive_noisy, evaluate, load_corpus  # noqa: E402

from orchestrator.classify import SCORERS, Rules, load_rules  # noqa: E402


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
