"""Encoder runs and greedy decoding on the PyTorch model, the CTranslate2 equivalent, and CER."""

from __future__ import annotations

import logging
import re
import unicodedata

import numpy as np

from voice.data.chinese import to_hk

log = logging.getLogger(__name__)

LANGUAGE = "zh"  # base Whisper has no `yue` token; Cantonese is transcribed under `zh`
PROMPT = (50258, 50260, 50359, 50363)  # <|startoftranscript|><|zh|><|transcribe|><|notimestamps|>
EOT = 50257  # <|endoftext|>
SOT = PROMPT[0]  # <|startoftranscript|>
NO_SPEECH = 50362  # <|nocaptions|>: after SOT, the multilingual models' "no speech" answer
SOT_PREV = 50361  # <|startofprev|>: previous-text context (the prompt) follows it
MAX_PROMPT_TOKENS = 200  # the transcriber keeps the last 200 tokens of a long prompt
TIMESTAMP_BEGIN = 50364  # first <|0.00|> token: never emitted without timestamps
MAX_NEW_TOKENS = 128  # an utterance of <= 30 s never needs more; stops repetition loops early


def run_encoder(model, features, first_layer: int = 0, last_layer: int | None = None):
    """Whisper's encoder on mel `features` (batch, n_mels, frames) of any window <= 30 s.

    With `first_layer` > 0, `features` are instead the hidden states after that many layers
    (the top-encoder mode's cache); `last_layer` stops early and skips the final layer norm.
    """
    import torch.nn.functional as F

    encoder = model.model.encoder
    if first_layer == 0:
        x = F.gelu(encoder.conv1(features))
        x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
        x = x + encoder.embed_positions.weight[: x.shape[1]]
    else:
        x = features
    layers = encoder.layers[first_layer:last_layer]
    for layer in layers:
        x = layer(x, None)
    if last_layer is None or last_layer >= len(encoder.layers):
        x = encoder.layer_norm(x)
    return x


def suppress_mask(generation_config, vocab_size: int):
    """(always, at first step) boolean masks of tokens greedy decoding never picks."""
    import torch

    always = torch.zeros(vocab_size, dtype=torch.bool)
    always[[t for t in generation_config.suppress_tokens or [] if t < vocab_size]] = True
    always[TIMESTAMP_BEGIN:] = True
    always[50258:TIMESTAMP_BEGIN] = True  # special tokens other than <|endoftext|>
    begin = always.clone()
    begin[[t for t in generation_config.begin_suppress_tokens or [] if t < vocab_size]] = True
    return always, begin


def decoder_prompt(tokenizer, text: str | None) -> list[int]:
    """The decoder's start tokens: the `text` prompt as previous context (if any), then
    <|startoftranscript|><|zh|><|transcribe|><|notimestamps|>. The same tokens as
    `voice.asr.Transcriber` builds from a model card's `initial_prompt` (a test checks it), so
    a model trained with a prompt is decoded with it in production."""
    if not text or not text.strip():
        return list(PROMPT)
    context = tokenizer.encode(" " + text.strip(), add_special_tokens=False)
    return [SOT_PREV, *context[-MAX_PROMPT_TOKENS:], *PROMPT]


def greedy_decode(model, encoder_states, max_new_tokens: int = MAX_NEW_TOKENS,
                  prompt: list[int] | tuple[int, ...] = PROMPT) -> list[list[int]]:  # fmt: skip
    """Batched greedy decoding with a KV cache on precomputed encoder states."""
    import torch

    batch, device = encoder_states.shape[0], encoder_states.device
    always, begin = suppress_mask(model.generation_config, model.config.vocab_size)
    always, begin = always.to(device), begin.to(device)
    tokens = torch.tensor([list(prompt)] * batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    out: list[list[int]] = [[] for _ in range(batch)]
    past = None
    with torch.no_grad():
        step_input = tokens
        for step in range(max_new_tokens):
            dec = model.model.decoder(
                input_ids=step_input,
                encoder_hidden_states=encoder_states,
                past_key_values=past,
                use_cache=True,
            )
            past = dec.past_key_values
            logits = model.proj_out(dec.last_hidden_state[:, -1]).float()
            logits[:, begin if step == 0 else always] = -float("inf")
            nxt = logits.argmax(-1)
            nxt[done] = EOT
            for i in range(batch):
                if not done[i] and nxt[i] != EOT:
                    out[i].append(int(nxt[i]))
            done |= nxt == EOT
            if bool(done.all()):
                break
            step_input = nxt[:, None]
    return out


def ct2_transcribe_tokens(ct2_model, features: np.ndarray, max_new_tokens: int = MAX_NEW_TOKENS):
    """Greedy tokens from a `ctranslate2.models.Whisper` on a batch of mel features."""
    import ctranslate2

    storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))
    results = ct2_model.generate(
        storage,
        [list(PROMPT)] * features.shape[0],
        beam_size=1,
        max_length=2 * max_new_tokens,  # CT2 generates min(max_length / 2, max_length - prompt)
        suppress_blank=True,
        suppress_tokens=[-1],
    )
    return [[t for t in r.sequences_ids[0] if t < EOT] for r in results]


_DROP = re.compile(r"[\s]+")


def normalize_for_cer(text: str) -> str:
    """The project's scoring normalisation (eval.normalize) with spaces removed: what CER counts.

    Falls back to s2hk + lower case + punctuation removal when the eval package is absent.
    """
    try:
        from eval.normalize import normalize
    except ImportError:
        normalize = None
    if normalize is not None:
        return _DROP.sub("", normalize(text))
    text = unicodedata.normalize("NFKC", to_hk(text)).lower()
    text = "".join(c for c in text if not unicodedata.category(c).startswith(("P", "S")))
    return _DROP.sub("", text)


def cer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus character error rate (edits / reference characters) after `normalize_for_cer`."""
    import jiwer

    refs = [normalize_for_cer(r) for r in references]
    hyps = [normalize_for_cer(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    if not pairs:
        return 0.0
    out = jiwer.process_characters([r for r, _ in pairs], [h for _, h in pairs])
    errors = out.substitutions + out.deletions + out.insertions
    return errors / max(1, sum(len(r) for r, _ in pairs))


__all__ = [
    "LANGUAGE",
    "PROMPT",
    "cer",
    "ct2_transcribe_tokens",
    "decoder_prompt",
    "greedy_decode",
    "normalize_for_cer",
    "run_encoder",
    "suppress_mask",
    "to_hk",
]
