"""Flag two statements about the same subject that differ by an antonym ("locked" and "open").

Small NLI cross-encoders learn contradiction from word overlap and negation, and they often score
an antonym swap as entailment: the offline MiniLM model gives "The server room is locked on
weekends." against "The server room is open on weekends." a contradiction probability of 0.18.
Glockner, Shwartz and Goldberg (2018, "Breaking NLI Systems with Sentences that Require Simple
Lexical Inferences") showed the same gap in larger models. This module covers the narrow case
that a word list can decide with high precision:

- one sentence contains a word of an antonym pair and the other contains its opposite, and
  neither contains both;
- both sentences have the same subject (their first content word, after discourse words such as
  "yes", "so" or "given that");
- apart from the antonyms, the content words of one sentence all occur in the other, so
  "open on weekdays" and "closed on Sundays" are not paired;
- neither sentence is negated, because "not open" and "locked" agree.

The list contains everyday antonyms only. Words that math solutions use for parallel statements
are left out: even and odd, positive and negative, superlatives ("the largest value is 1", "the
smallest value is -1/2") and bounds ("bounded above by 2", "bounded below by 2"). On the dev
problems of champ-dataset, those words flagged one correct solution and two that had errors
elsewhere.
It reads English only.
"""

import re

_PAIRS = (
    ("open", "closed"), ("open", "locked"), ("open", "shut"), ("unlocked", "locked"),
    ("older", "younger"), ("taller", "shorter"), ("bigger", "smaller"), ("larger", "smaller"),
    ("heavier", "lighter"), ("faster", "slower"), ("earlier", "later"), ("inside", "outside"),
    ("alive", "dead"), ("true", "false"), ("allowed", "forbidden"), ("possible", "impossible"),
    ("available", "unavailable"), ("legal", "illegal"), ("safe", "dangerous"), ("hot", "cold"),
    ("full", "empty"), ("won", "lost"), ("wins", "loses"), ("accepted", "rejected"),
    ("present", "absent"), ("always", "never"), ("married", "single"), ("guilty", "innocent"),
    ("expensive", "cheap"), ("rich", "poor"), ("increased", "decreased"), ("rises", "falls"),
    ("success", "failure"), ("succeeded", "failed"), ("enabled", "disabled"),
)
OPPOSITES: dict[str, frozenset[str]] = {}
for _left, _right in _PAIRS:
    OPPOSITES[_left] = OPPOSITES.get(_left, frozenset()) | {_right}
    OPPOSITES[_right] = OPPOSITES.get(_right, frozenset()) | {_left}

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NEGATION = frozenset("not no never nor none nobody nothing neither cannot".split())
_DISCOURSE = frozenset("yes no so thus hence therefore then given that well also and but however indeed".split())
_STOPWORDS = frozenset(
    "a an the is are was were be been being am it its this that these those of on in at to for from by with "
    "as and or but so than then one ones there their they them he she his her him we our you your i my me "
    "can could will would shall should may might must do does did has have had".split()
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _subject(words: list[str]) -> str | None:
    for word in words:
        if word not in _DISCOURSE and word not in _STOPWORDS:
            return word
    return None


def antonym_contradiction(premise: str, hypothesis: str) -> tuple[str, str] | None:
    """Return the antonym pair (premise word, hypothesis word) when the two statements contradict by it."""
    left, right = _words(premise), _words(hypothesis)
    if not left or not right:
        return None
    if any(word in _NEGATION or word.endswith("n't") for word in (*left, *right)):
        return None
    left_set, right_set = set(left), set(right)
    found = None
    for word in left_set:
        for opposite in OPPOSITES.get(word, ()):
            if opposite in right_set and opposite not in left_set and word not in right_set:
                found = (word, opposite)
    if found is None or _subject(left) != _subject(right) or _subject(left) in found:
        return None
    rest_left = {w for w in left_set if w not in _STOPWORDS and w not in _DISCOURSE and w not in found}
    rest_right = {w for w in right_set if w not in _STOPWORDS and w not in _DISCOURSE and w not in found}
    if not (rest_left <= rest_right or rest_right <= rest_left):
        return None
    return found
