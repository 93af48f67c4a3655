# The orchestrator's image; docker-compose.yml runs the nightly scheduler and the web view from it.
FROM python:3.11-slim

# The same system packages as scripts/bootstrap (its APT_PACKAGES), less docker-compose, which
# only the host needs: speech synthesis, PortAudio and its headers (pyaudio is built from source),
# sox, ALSA and the PulseAudio client that reaches the host's sound server through its socket,
# and tcpdump for a night's traffic capture (the container then needs the host's network and NET_RAW).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      espeak-ng libespeak-ng1 \
      libportaudio2 portaudio19-dev \
      libsndfile1 sox alsa-utils \
      pulseaudio pulseaudio-utils libasound2-plugins \
      python3-venv python3-dev gcc \
      tcpdump \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . /app
# Editable, so the package finds docs/log.md (the web view's column descriptions) in /app.
RUN pip install --no-cache-dir -e ".[web,parquet]"

# Defaults live under /app: data/ (the log) and audio/ (recordings, speech cache, models) are
# volumes in docker-compose.yml; lab.yaml, persona_scripts/ and skills_catalog/ are mounted from the checkout.
ENV ORCHESTRATOR_HOME=/app \
    PYTHONUNBUFFERED=1
CMD ["orchestrator", "--help"]
