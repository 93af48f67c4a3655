"""Sound: clips and WAV files (clip), the speakers and microphones beside the Echos (devices), when a
reply has ended (vad), and the personas' synthesized voice (speech)."""
