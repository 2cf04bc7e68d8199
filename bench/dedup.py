"""Benchmark near-dedup end to end: our batch path against datasketch and rensa on one corpus.

Run from the repository root:

    .venv/bin/python bench/dedup.py --n 200000 --save bench/results/dedup.json
    .venv/bin/python bench/dedup.py --n 2000000 --ours-only

The corpus has synthetic 200-word English documents (Zipf draws from a fixed vocabulary of
made-up words) and 200-character Chinese documents (Zipf draws from the Han characters of the
installed chatterbot_corpus package). Injected near duplicates have word or character edits at
several rates, or two 20-word chunks swapped. Every method gets the same texts and the same
language-aware shingles (word 5-grams, character 3-grams), then runs MinHash, LSH, verification
of the estimated Jaccard against the threshold and connected components:

- ours: ``filters.minhash.sign_batches`` + ``filters.dedup.verified_edges`` (with normalization
  to dedup keys, which the baselines skip), in 1 process and in ``--processes`` processes;
- datasketch per document: one ``MinHash`` per document with ``update_batch`` (default SHA-1
  hash), ``MinHashLSH``;
- datasketch bulk: ``MinHash.bulk`` with ``xxhash.xxh32_intdigest``, ``MinHashLSH``;
- rensa: one ``RMinHash`` per document, ``RMinHashLSH`` (126 permutations in 42 bands, because
  rensa needs the band count to divide the permutation count).

Baselines run in one process. Ground truth: every pair with exact shingle Jaccard at or above the
threshold among the injected groups and among the pairs any method reported. Each method's
precision and recall are over its verified pairs. Throughput is documents per second end to end,
corpus generation excluded. Peak memory is the highest resident set size of this process and its
workers, sampled every 20 ms while the method runs. The last line printed is one JSON object.
"""

import argparse
import gc
import json
import os
import re
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filters.dedup import DedupConfig, connected_components, verified_edges  # noqa: E402
from filters.minhash import sign_batches  # noqa: E402

WORDS_PER_DOC = 200
CHARS_PER_DOC = 200
ENGLISH_EDIT_RATES = (0.01, 0.03, 0.05, 0.10, 0.20)
CHINESE_EDIT_RATES = (0.01, 0.03, 0.05, 0.10, 0.20)
_WORD = re.compile(r"\w+")
_HAN = re.compile(r"[\u4e00-\u9fff]")


# ---------------------------------------------------------------------------------------------
# Corpus


def english_vocabulary(size: int, seed: int) -> np.ndarray:
    generator = np.random.default_rng(seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words = set()
    while len(words) < size:
        count = generator.integers(1, 4)
        words.add("".join(generator.choice(syllables, count)))
    return np.array(sorted(words))


def chinese_characters() -> tuple[np.ndarray, np.ndarray]:
    """Return the Han characters of chatterbot_corpus's Chinese files and their frequencies."""
    import chatterbot_corpus

    folder = Path(chatterbot_corpus.__file__).parent / "data" / "chinese"
    counts: dict[str, int] = {}
    for path in sorted(folder.glob("*.yml")):
        for char in _HAN.findall(path.read_text(encoding="utf-8")):
            counts[char] = counts.get(char, 0) + 1
    chars = sorted(counts, key=lambda char: (-counts[char], char))
    frequencies = np.array([counts[char] for char in chars], dtype=np.float64)
    return np.array(chars), frequencies / frequencies.sum()


class Corpus:
    """Deterministic corpus: batch ``k`` depends only on ``seed`` and ``k``."""

    def __init__(self, n: int, seed: int, batch_size: int, chinese_share: float, duplicate_share: float):
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self.chinese_share, self.duplicate_share = chinese_share, duplicate_share
        self.vocabulary = english_vocabulary(20_000, seed)
        ranks = np.arange(1, self.vocabulary.size + 1, dtype=np.float64)
        self.word_cdf = np.cumsum(1.0 / ranks**1.05)
        self.word_cdf /= self.word_cdf[-1]
        self.chars, char_p = chinese_characters()
        self.char_cdf = np.cumsum(char_p)
        self.char_cdf /= self.char_cdf[-1]

    def batch(self, index: int) -> tuple[pl.DataFrame, list[tuple[str, float, list[int]]]]:
        """Return batch ``index`` (columns doc, text, lang) and its injected groups.

        A group is ``(base doc, [(edit kind, edit rate, variant doc), ...])`` with global doc numbers.
        """
        generator = np.random.default_rng([self.seed, index])
        start = index * self.batch_size
        size = min(self.batch_size, self.n - start)
        variants = int(round(size * self.duplicate_share))
        bases = size - variants
        is_chinese = generator.random(bases) < self.chinese_share
        # Zipf draws for the whole batch at once: inverse CDF of uniform numbers.
        word_draws = self.vocabulary[np.searchsorted(self.word_cdf, generator.random((bases, WORDS_PER_DOC)))]
        char_draws = self.chars[np.searchsorted(self.char_cdf, generator.random((bases, CHARS_PER_DOC)))]
        texts: list[list[str]] = [
            (char_draws[row] if chinese else word_draws[row]).tolist() for row, chinese in enumerate(is_chinese)
        ]
        langs = ["zh" if chinese else "en" for chinese in is_chinese]
        groups: dict[int, list[tuple[str, float, int]]] = {}
        for variant in range(variants):
            base = int(generator.integers(bases))
            tokens = list(texts[base])
            if langs[base] == "en" and generator.random() < 0.2:
                kind, rate = "reorder", 0.0
                chunks = [tokens[i : i + 20] for i in range(0, len(tokens), 20)]
                first, second = generator.choice(len(chunks), 2, replace=False)
                chunks[first], chunks[second] = chunks[second], chunks[first]
                tokens = [token for chunk in chunks for token in chunk]
            else:
                rates = ENGLISH_EDIT_RATES if langs[base] == "en" else CHINESE_EDIT_RATES
                kind, rate = ("word_edit" if langs[base] == "en" else "char_edit"), float(generator.choice(rates))
                pool = self.vocabulary if langs[base] == "en" else self.chars
                for position in generator.choice(len(tokens), int(rate * len(tokens)), replace=False):
                    tokens[position] = str(pool[generator.integers(pool.size)])
            texts.append(tokens)
            langs.append(langs[base])
            groups.setdefault(base, []).append((kind, rate, bases + variant))
        order = generator.permutation(size)  # position in batch -> row in texts
        position_of = np.empty(size, dtype=np.int64)
        position_of[order] = np.arange(size)
        joined = ["".join(texts[row]) if langs[row] == "zh" else " ".join(texts[row]) for row in order]
        frame = pl.DataFrame(
            {"doc": np.arange(start, start + size, dtype=np.int64), "text": joined, "lang": [langs[row] for row in order]}
        )
        injected = [
            (start + int(position_of[base]), [(kind, rate, start + int(position_of[v])) for kind, rate, v in members])
            for base, members in sorted(groups.items())
        ]
        return frame, injected

    def batch_count(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size


# ---------------------------------------------------------------------------------------------
# Shared pieces: shingles in Python for the baselines and the exact Jaccard


def python_tokens(text: str, lang: str) -> list[str]:
    if lang == "zh":
        return list("".join(text.lower().split()))
    return _WORD.findall(text.lower())


def python_shingles(text: str, lang: str) -> list[str]:
    tokens = python_tokens(text, lang)
    size = 3 if lang == "zh" else 5
    separator = "" if lang == "zh" else " "
    return [separator.join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)]


def injected_pairs(injected) -> dict[tuple[int, int], str]:
    """Label every pair inside an injected group: the variant's edit, or ``between_variants``."""
    labels: dict[tuple[int, int], str] = {}
    for base, variants in injected:
        for kind, rate, doc in variants:
            labels[(min(base, doc), max(base, doc))] = f"{kind}_{rate:g}" if kind != "reorder" else kind
        for i, (_, _, first) in enumerate(variants):
            for _, _, second in variants[i + 1 :]:
                labels.setdefault((min(first, second), max(first, second)), "between_variants")
    return labels


def exact_jaccard(texts: list[str], langs: list[str], pairs: np.ndarray) -> np.ndarray:
    cache: dict[int, set[str]] = {}

    def shingle_set(doc: int) -> set[str]:
        if doc not in cache:
            cache[doc] = set(python_shingles(texts[doc], langs[doc]))
        return cache[doc]

    values = np.empty(pairs.shape[0], dtype=np.float64)
    for index, (left, right) in enumerate(pairs.tolist()):
        first, second = shingle_set(left), shingle_set(right)
        union = len(first | second)
        values[index] = len(first & second) / union if union else 0.0
    return values


class PeakMemory:
    """Sample the resident set size of this process plus its children every 20 ms."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.02)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def pairs_array(pairs: set[tuple[int, int]]) -> np.ndarray:
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


# ---------------------------------------------------------------------------------------------
# Methods: each returns the verified pairs as global doc numbers


def run_ours(batches, config: DedupConfig, processes: int, n: int) -> np.ndarray:
    signed = sign_batches(batches, config.signature_settings(), processes=processes, normalize=True)
    rows = signed.signed
    edges, _ = verified_edges(signed.signatures, signed.kinds[rows], config)
    connected_components(n, rows[edges] if edges.size else edges)
    return rows[edges]


def _verify_with_lsh(minhashes: dict[int, object], lsh, threshold: float) -> np.ndarray:
    found: set[tuple[int, int]] = set()
    for doc, minhash in minhashes.items():
        for other in lsh.query(minhash):
            if other != doc:
                pair = (min(doc, other), max(doc, other))
                if pair not in found and minhashes[pair[0]].jaccard(minhashes[pair[1]]) >= threshold:
                    found.add(pair)
    return pairs_array(found)


def run_datasketch_per_document(texts, langs, config: DedupConfig) -> np.ndarray:
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=config.near_duplicate_threshold, num_perm=config.num_perm, params=(config.bands, config.rows))
    minhashes: dict[int, object] = {}
    for doc, (text, lang) in enumerate(zip(texts, langs, strict=True)):
        shingles = python_shingles(text, lang)
        if not shingles:
            continue
        minhash = MinHash(num_perm=config.num_perm, seed=config.seed)
        minhash.update_batch([shingle.encode("utf-8") for shingle in shingles])
        minhashes[doc] = LeanMinHash(minhash)
        lsh.insert(doc, minhashes[doc], check_duplication=False)
    edges = _verify_with_lsh(minhashes, lsh, config.near_duplicate_threshold)
    connected_components(len(texts), edges)
    return edges


def run_datasketch_bulk(texts, langs, config: DedupConfig) -> np.ndarray:
    import xxhash
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=config.near_duplicate_threshold, num_perm=config.num_perm, params=(config.bands, config.rows))
    docs, shingle_lists = [], []
    for doc, (text, lang) in enumerate(zip(texts, langs, strict=True)):
        shingles = python_shingles(text, lang)
        if shingles:
            docs.append(doc)
            shingle_lists.append([shingle.encode("utf-8") for shingle in shingles])
    minhashes: dict[int, object] = {}
    for doc, minhash in zip(
        docs, MinHash.generator(shingle_lists, num_perm=config.num_perm, seed=config.seed, hashfunc=xxhash.xxh32_intdigest),
        strict=True,
    ):
        minhashes[doc] = LeanMinHash(minhash)
        lsh.insert(doc, minhashes[doc], check_duplication=False)
    edges = _verify_with_lsh(minhashes, lsh, config.near_duplicate_threshold)
    connected_components(len(texts), edges)
    return edges


def run_rensa(texts, langs, config: DedupConfig) -> np.ndarray:
    from rensa import RMinHash, RMinHashLSH

    num_perm = config.bands * config.rows
    lsh = RMinHashLSH(config.near_duplicate_threshold, num_perm, config.bands)
    minhashes: dict[int, object] = {}
    for doc, (text, lang) in enumerate(zip(texts, langs, strict=True)):
        shingles = python_shingles(text, lang)
        if not shingles:
            continue
        minhash = RMinHash(num_perm, config.seed)
        minhash.update(shingles)
        minhashes[doc] = minhash
        lsh.insert(doc, minhash)
    edges = _verify_with_lsh(minhashes, lsh, config.near_duplicate_threshold)
    connected_components(len(texts), edges)
    return edges


# ---------------------------------------------------------------------------------------------
# Scoring and reporting


def score(found: np.ndarray, truth: set[tuple[int, int]], langs_of_pair) -> dict[str, float | None]:
    found_set = {tuple(pair) for pair in found.tolist()}
    result: dict[str, float | None] = {}
    for label, keep in (("", None), ("_en", "en"), ("_zh", "zh")):
        f = {p for p in found_set if keep is None or langs_of_pair(p) == keep}
        t = {p for p in truth if keep is None or langs_of_pair(p) == keep}
        hits = len(f & t)
        result[f"precision{label}"] = round(hits / len(f), 4) if f else None
        result[f"recall{label}"] = round(hits / len(t), 4) if t else None
    result["pairs_found"] = len(found_set)
    return result


def timed(name: str, function, n: int) -> tuple[np.ndarray, dict]:
    gc.collect()
    with PeakMemory() as memory:
        started = time.perf_counter()
        found = function()
        seconds = time.perf_counter() - started
    stats = {"seconds": round(seconds, 2), "docs_per_s": round(n / seconds), "peak_rss_mb": round(memory.peak / 2**20)}
    print(f"{name:24s} {stats['docs_per_s']:>9,d} docs/s  {seconds:8.1f} s  peak RSS {stats['peak_rss_mb']:,d} MB", flush=True)
    return found, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="documents in the corpus")
    parser.add_argument("--seed", type=int, default=7, help="seed of the corpus")
    parser.add_argument("--processes", type=int, default=2, help="worker processes for our parallel run")
    parser.add_argument("--batch-size", type=int, default=10_000, help="documents per generated and signed batch")
    parser.add_argument("--chinese-share", type=float, default=0.2, help="share of Chinese base documents")
    parser.add_argument("--duplicate-share", type=float, default=0.1, help="share of documents that are injected variants")
    parser.add_argument("--ours-only", action="store_true", help="skip the baselines and ground truth (for large N)")
    parser.add_argument("--skip-datasketch", action="store_true",
                        help="run only our path and rensa; the datasketch ratios are then null")
    parser.add_argument("--save", type=Path, help="write the JSON result to this file too")
    args = parser.parse_args()

    config = DedupConfig()
    corpus = Corpus(args.n, args.seed, args.batch_size, args.chinese_share, args.duplicate_share)
    load = os.getloadavg()
    print(f"n={args.n:,d} threshold={config.near_duplicate_threshold} num_perm={config.num_perm} "
          f"bands={config.bands} rows={config.rows} cpus={os.cpu_count()} load={load[0]:.1f}", flush=True)
    result: dict[str, object] = {"n": args.n, "threshold": config.near_duplicate_threshold, "num_perm": config.num_perm,
                                 "bands": config.bands, "rows": config.rows, "load_avg_1min_start": round(load[0], 2)}

    if args.ours_only:
        # Stream the corpus through a Parquet file, so only a few batches of text are in memory.
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"dedup_bench_{args.n}_{args.seed}.parquet"
        started = time.perf_counter()
        import pyarrow.parquet as pq

        writer = None
        for index in range(corpus.batch_count()):
            table = corpus.batch(index)[0].to_arrow()
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        writer.close()
        print(f"generated {args.n:,d} documents in {time.perf_counter() - started:.0f} s", flush=True)

        def stream():
            for batch in pq.ParquetFile(path).iter_batches(batch_size=args.batch_size, columns=["text", "lang"]):
                yield pl.from_arrow(batch)

        found, stats = timed(f"ours {args.processes} processes", lambda: run_ours(stream(), config, args.processes, args.n), args.n)
        path.unlink()
        result.update(docs_per_s=stats["docs_per_s"], processes=args.processes, peak_rss_mb=stats["peak_rss_mb"],
                      seconds=stats["seconds"], pairs_found=int(found.shape[0]), ratio_vs_datasketch=None,
                      ratio_vs_rensa=None, precision=None, recall=None,
                      max_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        print(json.dumps(result))
        if args.save:
            args.save.write_text(json.dumps(result, indent=2) + "\n")
        return

    started = time.perf_counter()
    frames, injected = [], []
    for index in range(corpus.batch_count()):
        frame, groups = corpus.batch(index)
        frames.append(frame)
        injected.extend(groups)
    texts = [text for frame in frames for text in frame["text"].to_list()]
    langs = [lang for frame in frames for lang in frame["lang"].to_list()]
    print(f"generated {args.n:,d} documents, {len(injected):,d} injected groups in {time.perf_counter() - started:.0f} s",
          flush=True)
    frames = [frame.select("text", "lang") for frame in frames]

    methods = {
        "ours_1_process": lambda: run_ours(iter(frames), config, 1, args.n),
        f"ours_{args.processes}_processes": lambda: run_ours(iter(frames), config, args.processes, args.n),
        "rensa": lambda: run_rensa(texts, langs, config),
        "datasketch_bulk": lambda: run_datasketch_bulk(texts, langs, config),
        "datasketch_per_document": lambda: run_datasketch_per_document(texts, langs, config),
    }
    if args.skip_datasketch:
        del methods["datasketch_bulk"], methods["datasketch_per_document"]
    found: dict[str, np.ndarray] = {}
    stats: dict[str, dict] = {}
    for name, function in methods.items():
        found[name], stats[name] = timed(name, function, args.n)

    # Ground truth: exact Jaccard of every injected pair and every pair any method reported.
    labelled = injected_pairs(injected)
    candidates = set(labelled)
    for pairs in found.values():
        candidates.update(tuple(pair) for pair in pairs.tolist())
    candidate_array = np.array(sorted(candidates), dtype=np.int64).reshape(-1, 2)
    jaccard = exact_jaccard(texts, langs, candidate_array)
    truth = {tuple(pair) for pair, value in zip(candidate_array.tolist(), jaccard, strict=True)
             if value >= config.near_duplicate_threshold}
    print(f"ground truth: {len(truth):,d} pairs with exact Jaccard >= {config.near_duplicate_threshold}", flush=True)

    def lang_of_pair(pair):
        return langs[pair[0]]

    ours_found = {tuple(pair) for pair in found["ours_1_process"].tolist()}
    jaccard_of = dict(zip(map(tuple, candidate_array.tolist()), jaccard.tolist(), strict=True))
    per_edit: dict[str, list[tuple[float, bool]]] = {}
    for pair, label in labelled.items():
        per_edit.setdefault(label, []).append((jaccard_of[pair], pair in ours_found))
    print("injected pairs by edit: mean exact Jaccard, share at or above the threshold, share found by ours")
    edits = {}
    for label, values in sorted(per_edit.items()):
        exact = np.array([value for value, _ in values])
        caught = np.array([hit for _, hit in values])
        edits[label] = {
            "pairs": len(values),
            "mean_exact_jaccard": round(float(exact.mean()), 3),
            "at_or_above_threshold": round(float((exact >= config.near_duplicate_threshold).mean()), 3),
            "found": round(float(caught.mean()), 3),
        }
        print(f"  {label:22s} {len(values):7,d} pairs  J={exact.mean():.3f}  "
              f"above {edits[label]['at_or_above_threshold']:.3f}  found {caught.mean():.3f}")

    for name in methods:
        stats[name].update(score(found[name], truth, lang_of_pair))
        print(f"{name:24s} precision {stats[name]['precision']}  recall {stats[name]['recall']}  "
              f"(en {stats[name]['precision_en']}/{stats[name]['recall_en']}, "
              f"zh {stats[name]['precision_zh']}/{stats[name]['recall_zh']})")

    ours = stats["ours_1_process"]
    parallel = stats[f"ours_{args.processes}_processes"]

    def ratio_to(name: str) -> float | None:
        return round(ours["docs_per_s"] / stats[name]["docs_per_s"], 2) if name in stats else None

    result.update(
        docs_per_s=ours["docs_per_s"],
        ratio_vs_datasketch=ratio_to("datasketch_per_document"),
        ratio_vs_datasketch_bulk=ratio_to("datasketch_bulk"),
        ratio_vs_rensa=ratio_to("rensa"),
        docs_per_s_parallel=parallel["docs_per_s"],
        processes_parallel=args.processes,
        ratio_vs_rensa_parallel=round(parallel["docs_per_s"] / stats["rensa"]["docs_per_s"], 2),
        peak_rss_mb=ours["peak_rss_mb"],
        precision=ours["precision"], recall=ours["recall"],
        precision_en=ours["precision_en"], recall_en=ours["recall_en"],
        precision_zh=ours["precision_zh"], recall_zh=ours["recall_zh"],
        ground_truth_pairs=len(truth),
        injected_edits=edits,
        methods=stats,
        load_avg_1min_end=round(os.getloadavg()[0], 2),
    )
    if args.save:
        args.save.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
