"""Synthetic speakers: espeak-ng yue voice variants with their own speed and pitch, one split each.

Dev and test get voice variants that train never hears (yue+f4/m6 for dev, yue+f5/m7 for test)
plus speakers of the training variants at their own speed and pitch settings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from voice.tts import VOICE_VARIANTS, Voice

HELD_OUT = {"dev": ("yue+f4", "yue+m6"), "test": ("yue+f5", "yue+m7")}  # variants train never hears
TRAIN_VARIANTS = tuple(v for v in VOICE_VARIANTS if v not in HELD_OUT["dev"] + HELD_OUT["test"])
SPEED = (135, 195)  # espeak-ng words per minute, drawn per speaker
PITCH = (25, 75)  # espeak-ng pitch 0-99, drawn per speaker


@dataclass(frozen=True)
class Speaker:
    """A synthetic caller: an id, an espeak-ng voice, and the one split they belong to."""

    id: str
    voice: Voice
    split: str


def make_speakers(count: int = 60, seed: int = 0) -> list[Speaker]:
    """`count` speakers, about 80/10/10 train/dev/test (at least one in each when count >= 3)."""
    if count < 3:
        raise ValueError(f"need at least 3 speakers (one per split), got {count}")
    rng = random.Random(f"speakers-{seed}")
    n_held = max(1, round(count * 0.1))
    plan = ["dev"] * n_held + ["test"] * n_held + ["train"] * (count - 2 * n_held)
    rng.shuffle(plan)
    speakers = []
    seen = {"train": 0, "dev": 0, "test": 0}
    for index, split in enumerate(plan, start=1):
        k = seen[split]
        seen[split] += 1
        if split == "train":
            variant = TRAIN_VARIANTS[k % len(TRAIN_VARIANTS)]
        elif k % 3 == 2:  # every third held-out speaker: a training variant, new settings
            variant = rng.choice(TRAIN_VARIANTS)
        else:
            variant = HELD_OUT[split][(k - k // 3) % 2]
        voice = Voice(name=variant, speed=rng.randint(*SPEED), pitch=rng.randint(*PITCH))
        speakers.append(Speaker(f"spk{index:03d}", voice, split))
    return speakers
