"""Measuring models on manifests: Cantonese text normalisation, CER/MER/WER, reports, `voice eval`.

Modules: `normalize` (composed normalisation steps), `numerals` (Chinese numerals to digits),
`metrics` (edit counts, corpus rates, paired bootstrap), `vadscore` (missed/false-alarm time),
`results` (per-model results and the --json summary), `report` and `plots` (--report DIR),
`runner` (transcribing with the production code), `cli` (`voice eval`).
"""
