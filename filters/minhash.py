"""Vectorized shingling and MinHash signatures, interchangeable with datasketch's ``LeanMinHash``.

A batch of texts becomes signatures without a per-document Python loop:

1. Tokens: word tokens are ``\\w+`` runs after lowercasing, plus one token per run of leading
   spaces or tabs on a line (only code keeps lines in a dedup key), so indentation is part of
   the shingles. Character tokens are the characters after removing whitespace. Polars splits the
   whole batch at once.
2. Token hashes: polars ``Series.hash(seed=0)``, 64 bits per token.
3. Shingle hashes: ``size`` consecutive token hashes of one document are combined with a
   polynomial hash and a 64-bit finalizer, and the high 32 bits are kept. ``shingle_hash`` does
   the same for one shingle in plain Python, so it can be a datasketch ``hashfunc``.
4. Signatures: for each permutation ``(a, b)`` the minimum of ``a * fmix32(h) + b mod 2**32``
   over each document's shingle hashes, which is datasketch 2.0's ``affine32`` scheme. Rows
   loaded with ``LeanMinHash(seed=seed, hashvalues=row, scheme="affine32")`` give the same
   Jaccard estimates as datasketch's own ``MinHash(num_perm, seed, hashfunc=shingle_hash)``.

NOTE: polars documents ``hash`` as stable within one polars version only, so stored signatures
can change when polars is upgraded (clusters are recomputed each run). The project pins polars.
"""

import multiprocessing
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from filters.lang import _SCRIPTS, CHAR_SHINGLE_LANGS
from filters.normalize import dedup_key

TOKEN_HASH_SEED = 0
# Lengths of the runs of signature work: a (num_perm x 8192) uint32 block is 4 MiB at 128
# permutations, which stays in the L2/L3 cache. Measured with numpy 2.4 on a 2-core x86 VM: about
# 0.7 ns per (shingle, permutation) at 4,096 to 16,384 shingles, 2 ns at 65,536.
DEFAULT_BATCH_SHINGLES = 8192

_WORD = r"\w+"
_WORD_OR_INDENT = r"(?m)^[ \t]+|\w+"
_NON_ASCII = r"[^\x00-\x7f]"
_WHITESPACE = r"\s+"
_SPACELESS = "|".join(_SCRIPTS[name].pattern for name in ("han", "kana", "thai"))
_ANY_SCRIPT = "|".join(pattern.pattern for pattern in _SCRIPTS.values())

_NGRAM_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_MIX_MULTIPLIER_1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX_MULTIPLIER_2 = np.uint64(0xC4CEB9FE1A85EC53)
# Murmur3's 32-bit finalizer, the fixed bijection datasketch applies to each input hash before
# the affine permutations of its "affine32" scheme.
_FMIX32_SHIFTS_AND_MULTIPLIERS = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)


@dataclass(frozen=True)
class ShingleHashes:
    """Shingle hashes of a batch: ``hashes[offsets[i]:offsets[i + 1]]`` belong to document ``i``.

    A document with fewer tokens than the shingle size has no shingles. Hashes may repeat within
    a document; MinHash takes minima, so repeats do not change a signature.
    """

    hashes: np.ndarray  # uint32
    offsets: np.ndarray  # int64, length documents + 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


def char_shingle_mask(texts: pl.Series, langs: pl.Series | None = None) -> np.ndarray:
    """Decide per text whether to shingle by characters, like ``filters.lang.uses_char_shingles``.

    True when the language is written without spaces (``CHAR_SHINGLE_LANGS``) or when Han, kana
    or Thai characters make up at least 30% of the characters that belong to a known script.
    """
    texts = texts.fill_null("")
    mask = np.zeros(len(texts), dtype=bool)
    if langs is not None:
        mask |= langs.is_in(list(CHAR_SHINGLE_LANGS)).fill_null(False).to_numpy().astype(bool)
    # ASCII text has no Han, kana or Thai, so only the other rows need the script counts.
    rows = np.flatnonzero(~mask & texts.str.contains(_NON_ASCII).to_numpy().astype(bool))
    if rows.size:
        counts = pl.DataFrame({"text": texts.gather(rows)}).select(
            pl.col("text").str.count_matches(_SPACELESS).alias("spaceless"),
            pl.col("text").str.count_matches(_ANY_SCRIPT).alias("total"),
        )
        spaceless, total = counts["spaceless"].to_numpy(), counts["total"].to_numpy()
        mask[rows] = (total > 0) & (spaceless >= 0.3 * total)
    return mask


def shingle_texts(texts: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Return texts that tokenize like their dedup keys, and which of them span several lines.

    Single-line texts only get NFKC and the removal of format (Cf) characters, done by polars
    for the whole batch: collapsing whitespace would not change their word or character tokens.
    Multi-line texts, where code keeps its indentation, go through ``dedup_key`` one by one.
    NOTE: polars' Unicode tables can be newer than Python's ``unicodedata``, so a character
    assigned in a recent Unicode version may normalize differently here than in exact dedup.
    """
    texts = texts.fill_null("")
    multiline = texts.str.contains(r"[\n\r]").to_numpy().astype(bool)
    non_ascii = texts.str.contains(_NON_ASCII).to_numpy().astype(bool) & ~multiline
    values = texts.to_list() if multiline.any() else None
    if non_ascii.any():
        rows = np.flatnonzero(non_ascii)
        cleaned = texts.gather(rows).str.normalize("NFKC").str.replace_all(r"\p{Cf}", "")
        texts = texts.scatter(rows, cleaned)
    if values is not None:
        rows = np.flatnonzero(multiline)
        texts = texts.scatter(rows, pl.Series([dedup_key(values[row]) for row in rows], dtype=pl.String))
    return texts, multiline


def token_lists(texts: pl.Series, use_chars: np.ndarray, multiline: np.ndarray | None = None) -> pl.Series:
    """Split each text into tokens: characters without whitespace where ``use_chars``, else words.

    Word tokens of ``multiline`` rows include indentation runs. ``texts`` should come from
    ``shingle_texts`` or ``filters.normalize.dedup_key``.
    """
    texts = texts.fill_null("").str.to_lowercase()
    multiline = np.zeros(len(texts), dtype=bool) if multiline is None else multiline
    parts: list[tuple[np.ndarray, pl.Series]] = []
    for rows, split in (
        (np.flatnonzero(use_chars), lambda part: part.str.replace_all(_WHITESPACE, "").str.split("")),
        (np.flatnonzero(~use_chars & ~multiline), lambda part: part.str.extract_all(_WORD)),
        (np.flatnonzero(~use_chars & multiline), lambda part: part.str.extract_all(_WORD_OR_INDENT)),
    ):
        if rows.size == len(texts):
            return split(texts).alias("tokens")
        if rows.size:
            parts.append((rows, split(texts.gather(rows))))
    if not parts:
        return pl.Series("tokens", [], dtype=pl.List(pl.String))
    # Put the rows of each part back in input order.
    position = np.empty(len(texts), dtype=np.int64)
    position[np.concatenate([rows for rows, _ in parts])] = np.arange(len(texts))
    return pl.concat([part for _, part in parts]).gather(position).alias("tokens")


def _combine(token_hashes: np.ndarray, size: int) -> np.ndarray:
    """Combine each run of ``size`` consecutive uint64 token hashes into one uint32 shingle hash."""
    count = token_hashes.shape[0] - size + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint32)
    combined = token_hashes[:count].copy()
    for step in range(1, size):
        combined *= _NGRAM_MULTIPLIER
        combined += token_hashes[step : step + count]
    combined ^= combined >> np.uint64(33)
    combined *= _MIX_MULTIPLIER_1
    combined ^= combined >> np.uint64(33)
    combined *= _MIX_MULTIPLIER_2
    combined ^= combined >> np.uint64(33)
    return (combined >> np.uint64(32)).astype(np.uint32)


def shingle_hashes_of_tokens(tokens: pl.Series, size: int) -> ShingleHashes:
    """Hash every run of ``size`` consecutive tokens of each token list (a polars list column)."""
    lengths = tokens.list.len().fill_null(0).to_numpy().astype(np.int64)
    token_offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=token_offsets[1:])
    flat = tokens.explode(keep_nulls=False, empty_as_null=False)
    token_hashes = flat.hash(seed=TOKEN_HASH_SEED).to_numpy().astype(np.uint64, copy=False)

    combined = _combine(token_hashes, size)
    # A run is a shingle only if it ends inside the document it starts in.
    document_end = np.repeat(token_offsets[1:], lengths)[: combined.shape[0]]
    valid = np.arange(combined.shape[0], dtype=np.int64) + size <= document_end
    counts = np.maximum(lengths - size + 1, 0)
    offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return ShingleHashes(hashes=combined[valid], offsets=offsets)


def shingle_hash(tokens: Sequence[str]) -> int:
    """Return the 32-bit hash of one shingle given as its tokens, equal to the batch path's value.

    Use it as datasketch's ``hashfunc`` to build a ``MinHash`` from shingles one at a time.
    """
    token_hashes = pl.Series(list(tokens), dtype=pl.String).hash(seed=TOKEN_HASH_SEED).to_numpy()
    return int(_combine(token_hashes.astype(np.uint64), len(tokens))[0])


def minhash_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``(a, b)`` uint32 arrays of datasketch's ``affine32`` permutations for ``seed``.

    Like datasketch 2.0, ``a`` is odd and drawn with ``numpy.random.RandomState(seed)``, and ``b``
    is uniform below 2**32, so each permutation ``a * h + b mod 2**32`` is a bijection.
    """
    generator = np.random.RandomState(seed)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _fmix32(values: np.ndarray) -> np.ndarray:
    shift1, mult1, shift2, mult2, shift3 = _FMIX32_SHIFTS_AND_MULTIPLIERS
    values = values ^ (values >> np.uint32(shift1))
    values = values * np.uint32(mult1)
    values = values ^ (values >> np.uint32(shift2))
    values = values * np.uint32(mult2)
    return values ^ (values >> np.uint32(shift3))


def signatures_of(
    shingles: ShingleHashes,
    permutations: tuple[np.ndarray, np.ndarray],
    batch_shingles: int = DEFAULT_BATCH_SHINGLES,
) -> np.ndarray:
    """Return MinHash signatures, shape ``(documents, num_perm)`` uint32.

    Every document must have at least one shingle. Work runs over about ``batch_shingles``
    shingles at a time (one document may exceed it), so extra memory is about
    ``batch_shingles * num_perm * 4`` bytes however many documents there are.
    """
    a, b = permutations
    counts = shingles.counts
    if counts.size and counts.min() == 0:
        raise ValueError("every document must have at least one shingle; leave texts without shingles out of MinHash")
    offsets = shingles.offsets
    documents = counts.shape[0]
    signatures = np.empty((documents, a.shape[0]), dtype=np.uint32)
    start = 0
    while start < documents:
        limit = offsets[start] + batch_shingles
        stop = max(int(np.searchsorted(offsets, limit, side="right")) - 1, start + 1)
        stop = min(stop, documents)
        mixed = _fmix32(shingles.hashes[offsets[start] : offsets[stop]])
        # Permutations along rows and shingles along columns: reduceat over contiguous runs of
        # each row is about 50 times faster than over rows of a (shingles, num_perm) array.
        permuted = np.multiply.outer(a, mixed)
        permuted += b[:, None]
        signatures[start:stop] = np.minimum.reduceat(permuted, offsets[start:stop] - offsets[start], axis=1).T
        start = stop
    return signatures


def minhash_signatures(
    hash_lists: list[np.ndarray],
    permutations: tuple[np.ndarray, np.ndarray],
    batch_shingles: int = DEFAULT_BATCH_SHINGLES,
) -> np.ndarray:
    """Return MinHash signatures of uint32 hash arrays, one row per array (see ``signatures_of``)."""
    lengths = np.fromiter((h.shape[0] for h in hash_lists), dtype=np.int64, count=len(hash_lists))
    offsets = np.zeros(len(hash_lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(hash_lists).astype(np.uint32) if hash_lists else np.empty(0, dtype=np.uint32)
    return signatures_of(ShingleHashes(flat, offsets), permutations, batch_shingles)


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Return one uint64 hash per (document, band), shape ``(n, bands)``.

    A collision of two different bands only adds a candidate pair, which verification drops.
    """
    banded = signatures[:, : bands * rows].reshape(signatures.shape[0], bands, rows).astype(np.uint64)
    keys = np.full(banded.shape[:2], np.uint64(0xCBF29CE484222325), dtype=np.uint64)
    for row in range(rows):
        keys = (keys ^ banded[:, :, row]) * np.uint64(0x100000001B3)
        keys ^= keys >> np.uint64(29)
    return keys


def _pairs_of_band(keys: np.ndarray, max_bucket_size: int) -> pl.DataFrame:
    frame = pl.DataFrame({"doc": np.arange(keys.shape[0], dtype=np.int64), "key": keys})
    buckets = (
        frame.filter(pl.col("key").is_duplicated())
        .group_by("key")
        .agg(pl.col("doc").sort().alias("docs"))
        .with_row_index("bucket")
    )
    small = buckets.filter(pl.col("docs").list.len() <= max_bucket_size)
    large = buckets.filter(pl.col("docs").list.len() > max_bucket_size)
    members = small.select("bucket", "docs").explode("docs")
    pairs_small = (
        members.join(members, on="bucket", suffix="_right")
        .filter(pl.col("docs") < pl.col("docs_right"))
        .select(pl.col("docs").alias("left"), pl.col("docs_right").alias("right"))
    )
    pairs_large = large.select(
        pl.col("docs").list.first().alias("left"), pl.col("docs").list.slice(1).alias("right")
    ).explode("right")
    return pl.concat([pairs_small, pairs_large.cast(pairs_small.schema)])


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int, max_bucket_size: int = 64) -> np.ndarray:
    """Return unique candidate pairs ``(i, j)`` with ``i < j`` that share at least one band hash.

    Bands are grouped one at a time, so memory contains one band's keys plus the pairs found so far.
    A bucket with more than ``max_bucket_size`` members contributes only the pairs of each member
    with the bucket's lowest index, so one huge bucket cannot produce a quadratic number of pairs.
    NOTE: in such a bucket two members similar to each other but not to the lowest member are
    linked only if another band pairs them.
    """
    count = signatures.shape[0]
    if count < 2:
        return np.empty((0, 2), dtype=np.int64)
    found: list[pl.DataFrame] = []
    for band in range(bands):
        keys = band_hashes(signatures[:, band * rows : (band + 1) * rows], 1, rows)[:, 0]
        pairs = _pairs_of_band(keys, max_bucket_size)
        if pairs.height:
            found.append(pairs)
        if len(found) >= 8:
            found = [pl.concat(found).unique()]
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = pl.concat(found).unique().sort("left", "right")
    return pairs.to_numpy().astype(np.int64).reshape(-1, 2)


def estimated_jaccard(signatures: np.ndarray, left: np.ndarray, right: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Return the share of equal signature slots for each pair of rows ``left[k]``, ``right[k]``."""
    result = np.empty(left.shape[0], dtype=np.float64)
    for start in range(0, left.shape[0], chunk):
        stop = start + chunk
        result[start:stop] = (signatures[left[start:stop]] == signatures[right[start:stop]]).mean(axis=1)
    return result


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Return the probability that a pair with Jaccard ``similarity`` shares at least one band."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def lsh_parameters(threshold: float, num_perm: int, max_miss_at_threshold: float = 0.02) -> tuple[int, int]:
    """Choose ``(bands, rows)`` with ``bands * rows <= num_perm`` for a Jaccard ``threshold``.

    Among the splits that make a pair at the threshold a candidate with probability at least
    ``1 - max_miss_at_threshold``, pick the one with the lowest candidate probability at half the
    threshold: a missed pair is lost for good, while an extra candidate only costs one
    verification. At threshold 0.5 and 128 permutations this is 42 bands of 3 rows: candidate
    probability 0.996 at Jaccard 0.5 and 0.48 at 0.25 (32 x 4 would give 0.87 and 0.12). When no
    split reaches that recall, return the split with the highest recall at the threshold.
    """
    splits = [(num_perm // rows, rows) for rows in range(1, num_perm + 1)]
    eligible = [s for s in splits if 1.0 - candidate_probability(threshold, *s) <= max_miss_at_threshold]
    if not eligible:
        return max(splits, key=lambda s: (candidate_probability(threshold, *s), -s[1]))
    return min(eligible, key=lambda s: (candidate_probability(threshold / 2, *s), -s[1]))


def expected_word_jaccard(edit_rate: float, shingle_size: int) -> float:
    """Return the word-shingle Jaccard expected after replacing a share ``edit_rate`` of the words.

    A shingle survives when none of its words changed, with probability ``s = (1 - e) ** n``;
    two sets of equal size sharing a share ``s`` have Jaccard ``s / (2 - s)``.
    """
    kept = (1.0 - edit_rate) ** shingle_size
    return kept / (2.0 - kept)



# ---------------------------------------------------------------------------------------------
# Signing batches of texts, in this process or in worker processes

KIND_NAMES = ("none", "word", "char")  # index = the kind code stored per text


@dataclass(frozen=True)
class SignatureSettings:
    """Signature parameters: shingle sizes, permutation count and seed, plus the work-run length."""

    word_shingle_size: int = 5
    char_shingle_size: int = 3
    num_perm: int = 128
    seed: int = 1
    batch_shingles: int = DEFAULT_BATCH_SHINGLES


@dataclass(frozen=True)
class SignedTexts:
    """Signatures of the texts that have shingles, in input order, and a kind code per text.

    ``kinds[i]`` indexes ``KIND_NAMES``; texts with kind 0 (``"none"``, fewer tokens than one
    shingle) have no row in ``signatures``.
    """

    signatures: np.ndarray  # uint32, (texts with shingles, num_perm)
    kinds: np.ndarray  # int8, one per text

    @property
    def signed(self) -> np.ndarray:
        """Indices of the texts that have a signature row, in row order."""
        return np.flatnonzero(self.kinds > 0)


def sign_texts(
    texts: pl.Series,
    use_chars: np.ndarray,
    settings: SignatureSettings,
    permutations: tuple[np.ndarray, np.ndarray] | None = None,
    multiline: np.ndarray | None = None,
) -> SignedTexts:
    """Shingle and sign texts: character shingles where ``use_chars``, word shingles elsewhere.

    ``texts`` and ``multiline`` come from ``shingle_texts`` (or dedup keys, with ``multiline``
    marking the keys that contain a line break).
    """
    if multiline is None:
        multiline = texts.fill_null("").str.contains("\n").to_numpy().astype(bool)
    permutations = permutations or minhash_permutations(settings.num_perm, settings.seed)
    kinds = np.zeros(len(texts), dtype=np.int8)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for code, size, mask in ((1, settings.word_shingle_size, ~use_chars), (2, settings.char_shingle_size, use_chars)):
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            continue
        tokens = token_lists(texts.gather(rows), use_chars[rows], multiline[rows])
        shingles = shingle_hashes_of_tokens(tokens, size)
        has_shingles = shingles.counts > 0
        kinds[rows[has_shingles]] = code
        kept = ShingleHashes(shingles.hashes, np.concatenate(([0], shingles.offsets[1:][has_shingles])))
        parts.append((rows[has_shingles], signatures_of(kept, permutations, settings.batch_shingles)))
    signatures = np.empty((int((kinds > 0).sum()), settings.num_perm), dtype=np.uint32)
    # Put each kind's rows back in input order.
    row_of_text = np.cumsum(kinds > 0) - 1
    for rows, block in parts:
        signatures[row_of_text[rows]] = block
    return SignedTexts(signatures=signatures, kinds=kinds)


def sign_frame(frame: pl.DataFrame, settings: SignatureSettings, normalize: bool = True) -> SignedTexts:
    """Sign the ``text`` column of ``frame``.

    The shingle kind comes from a boolean ``use_chars`` column if there is one, else from
    ``char_shingle_mask`` of the text and the optional ``lang`` column. With ``normalize`` the
    texts first go through ``shingle_texts``; without it they must already be dedup keys.
    """
    texts = frame["text"]
    multiline = None
    if normalize:
        texts, multiline = shingle_texts(texts)
    if "use_chars" in frame.columns:
        use_chars = frame["use_chars"].to_numpy().astype(bool)
    else:
        use_chars = char_shingle_mask(texts, frame["lang"] if "lang" in frame.columns else None)
    return sign_texts(texts, use_chars, settings, multiline=multiline)


def sign_batches(
    batches: Iterable[pl.DataFrame], settings: SignatureSettings, processes: int = 1, normalize: bool = True
) -> SignedTexts:
    """Sign a stream of frames (see ``sign_frame`` for the columns) and concatenate the results.

    With ``processes > 1`` the batches are signed in that many spawned worker processes, at most
    two batches per worker in flight, so only a few batches of text are in memory at a time. The result
    does not depend on the batch sizes or on the number of processes.
    """
    if processes <= 1:
        results = [sign_frame(batch, settings, normalize) for batch in batches]
    else:
        results = []
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
            pending: deque = deque()
            for batch in batches:
                pending.append(pool.submit(sign_frame, batch, settings, normalize))
                while len(pending) >= 2 * processes:
                    results.append(pending.popleft().result())
            while pending:
                results.append(pending.popleft().result())
    kinds = np.concatenate([result.kinds for result in results]) if results else np.empty(0, dtype=np.int8)
    # Copy batch by batch and drop each batch's rows once copied, so the signatures are never
    # held twice (np.empty pages become resident only when written).
    signatures = np.empty((int((kinds > 0).sum()), settings.num_perm), dtype=np.uint32)
    start = 0
    for index in range(len(results)):
        block = results[index].signatures
        signatures[start : start + block.shape[0]] = block
        start += block.shape[0]
        results[index] = None
    return SignedTexts(signatures=signatures, kinds=kinds)
