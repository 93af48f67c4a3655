# The two commands of the README, and a few more for developers.
VENV := .venv/bin

.PHONY: demo test lint bench clean

## demo: install everything, fetch a speech model, and run a demo night on virtual Echos
demo:
	scripts/bootstrap
	$(VENV)/orchestrator models download --if-missing \
	  || echo "no English Vosk model could be fetched: the demo hears English with pocketsphinx's bundled model" >&2
	$(VENV)/orchestrator demo --model auto

## test: install everything, check the types (mypy) and run the test suite (what CI runs)
test:
	scripts/bootstrap test
	$(VENV)/mypy
	$(VENV)/pytest

lint:
	$(VENV)/ruff check orchestrator tests bench

## bench: measure a demo night (interaction overhead, end-of-reply delay, transcription speed)
bench:
	scripts/bootstrap test
	$(VENV)/python bench/demo_night.py

clean:
	rm -rf data audio/recordings audio/tts-cache .pytest_cache
