"""A synthetic stand-in for real call recordings: espeak-ng Cantonese through a phone line."""

from voice.data.synth.corpus import CallPlan, SynthOptions, generate_corpus, plan_calls

__all__ = ["CallPlan", "SynthOptions", "generate_corpus", "plan_calls"]
