"""Answer latency on a large synthetic KB (the sample KB expanded with varied phrasings)."""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from dataclasses import replace

from voice.answer.engine import AnswerEngine, AnswerOptions
from voice.answer.kb import SAMPLE_KB, Entry, KnowledgeBase, load_kb

log = logging.getLogger(__name__)

PREFIXES = ("", "唔該", "請問", "我想問下", "你好，", "喂，", "我想知", "麻煩你，")
SUFFIXES = ("", "呀", "呢", "㗎", "啊唔該", "？", "，點算好")
# Topics that make each synthetic entry distinct: products, districts, plans, services.
TOPICS = (
    "iPhone 16",
    "Galaxy S25",
    "Pixel 9",
    "5G 月費",
    "4G 上網卡",
    "家居寬頻",
    "1000M 光纖",
    "商業寬頻",
    "智能手錶",
    "平板電腦",
    "路由器",
    "儲值卡",
    "漫遊日費",
    "國際長途",
    "IDD",
    "家居電話",
    "網上行",
    "串流服務",
    "Netflix",
    "Disney+",
    "保險",
    "信用卡",
    "分期付款",
) + tuple(
    f"{d}區"
    for d in "旺角 沙田 觀塘 荃灣 屯門 元朗 將軍澳 銅鑼灣 灣仔 中環 大埔 上水 "
    "深水埗 九龍城 黃大仙 葵涌 東涌 西貢 柴灣 北角".split()
)
# Homophone slips an ASR makes (right -> wrong), used to corrupt bench queries.
HOMOPHONES = {
    "單": "丹",
    "密": "蜜",
    "遊": "由",
    "頻": "貧",
    "退": "推",
    "訴": "素",
    "帳": "賬",
    "網": "往",
    "號": "好",
    "碼": "馬",
    "數": "素",
    "費": "廢",
}


def synthetic_kb(size: int = 5000, seed: int = 0) -> KnowledgeBase:
    """`size` entries: each sample entry many times, every copy about a different topic."""
    rng = random.Random(seed)
    base = load_kb(SAMPLE_KB).entries
    entries = []
    for i in range(size):
        src = base[i % len(base)]
        topic = f"{rng.choice(TOPICS)}{rng.choice(TOPICS)}" if i >= len(base) else ""
        questions = tuple(
            f"{rng.choice(PREFIXES)}{topic}{q}{rng.choice(SUFFIXES)}" for q in src.questions
        )
        keywords = src.keywords + ((topic,) if topic else ())
        entries.append(
            replace(src, id=f"{src.id}-{i:05d}", questions=questions, keywords=keywords, row=i + 2)
        )
    return KnowledgeBase(tuple(entries))


def _corrupt(text: str, rng: random.Random) -> str:
    chars = [HOMOPHONES.get(c, c) if rng.random() < 0.5 else c for c in text]
    return rng.choice(PREFIXES) + "".join(chars) + rng.choice(SUFFIXES)


def run_bench(
    entries: int = 5000, queries: int = 500, seed: int = 0, semantic: bool = True
) -> dict:
    """Median and p95 wall time of `session.answer` on a synthetic KB of `entries` entries, and
    the KB's load time in a new process with an empty cache (first start), a filled one
    (restart) and after one entry was edited."""
    import tempfile

    from voice.answer.embed import SentenceEncoder

    rng = random.Random(seed)
    kb = synthetic_kb(entries, seed)
    t0 = time.perf_counter()
    encoder = SentenceEncoder.load() if semantic else None
    encoder_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as cache:
        first_s = _load_seconds(entries, seed, semantic, cache)
        again_s = _load_seconds(entries, seed, semantic, cache)
        edited_s = _load_seconds(entries, seed, semantic, cache, edit=True)
        options = AnswerOptions(semantic=semantic, kb_cache_dir=cache)
        engine = AnswerEngine(kb, options, encoder=encoder)
    session = engine.session(call_id="bench")
    picks = [rng.choice(kb.entries) for _ in range(queries)]
    texts = [_corrupt(rng.choice(e.questions), rng) for e in picks]
    session.answer("warm up")
    times, correct = [], 0
    for entry, text in zip(picks, texts, strict=True):
        start = time.perf_counter()
        ans = session.answer(text)
        times.append((time.perf_counter() - start) * 1000)
        top = ans.suggestions[0].id if ans.suggestions else ""
        correct += top.rsplit("-", 1)[0] == _base_id(entry)
    times.sort()
    return {
        "entries": len(kb),
        "queries": queries,
        "semantic": semantic,
        "encoder_load_s": round(encoder_s, 2),
        "build_s": round(first_s, 2),  # first start (new process): KB indexed and embedded
        "build_cached_s": round(again_s, 2),  # restart (new process): index read from the cache
        "build_edited_s": round(edited_s, 2),  # restart after one entry changed (new process)
        "median_ms": round(statistics.median(times), 3),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 3),
        "max_ms": round(times[-1], 3),
        "top1_topic_accuracy": round(correct / queries, 3),  # right sample entry, any copy
    }


def _load_seconds(entries: int, seed: int, semantic: bool, cache: str, edit: bool = False):
    """The KB's load time in a new process, as at a server's start, with whatever `cache` holds;
    `edit`: one entry gets one more question first (a KB owner's edit). The encoder's own load is
    not counted (it is `encoder_load_s`)."""
    import subprocess
    import sys

    code = (
        "import time\n"
        "from dataclasses import replace\n"
        "from voice.answer.bench import synthetic_kb\n"
        "from voice.answer.embed import SentenceEncoder\n"
        "from voice.answer.engine import AnswerEngine, AnswerOptions\n"
        "from voice.answer.kb import KnowledgeBase\n"
        f"kb = synthetic_kb({entries}, {seed})\n"
        f"if {edit}:\n"
        "    e = kb.entries[0]\n"
        "    e = replace(e, questions=(*e.questions, '請問有冇新嘅優惠'))\n"
        "    kb = KnowledgeBase((e, *kb.entries[1:]))\n"
        f"encoder = SentenceEncoder.load() if {semantic} else None\n"
        f"options = AnswerOptions(semantic={semantic}, kb_cache_dir={cache!r})\n"
        "t0 = time.perf_counter()\n"
        "AnswerEngine(kb, options, encoder=encoder)\n"
        "print(time.perf_counter() - t0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _base_id(entry: Entry) -> str:
    return entry.id.rsplit("-", 1)[0]


def main() -> int:
    for semantic in (False, True):
        result = run_bench(semantic=semantic)
        print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
