"""Fine-tuning Whisper on call recordings, on the CPU, and exporting back to CTranslate2."""
