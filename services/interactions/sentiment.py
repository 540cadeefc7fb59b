"""A touchpoint's sentiment: VADER's compound score of its subject and body, from -1 (most negative) to 1.

VADER was a fifth of the CPU of a batch and of NATS ingest. ``Vader.compound`` gives the score
``SentimentIntensityAnalyzer.polarity_scores`` gives, for less: a text without emoji skips VADER's
character-by-character emoji pass (which leaves such a text as it is), a text without a lexicon word scores 0
without the per-word rules (every rule starts from a lexicon word), and only lexicon words go through
``sentiment_valence``, on the few words around them its rules read. The rules themselves are VADER's own
methods; a test compares the two on thousands of texts built to reach every rule.
"""

from __future__ import annotations

import string
from functools import lru_cache

from vaderSentiment.vaderSentiment import BOOSTER_DICT, SentimentIntensityAnalyzer, allcap_differential

_PUNCTUATION = string.punctuation


class _Window:
    """What ``sentiment_valence`` reads of a ``SentiText``: the words around one word, and the whole text's caps."""

    __slots__ = ("is_cap_diff", "words_and_emoticons")

    def __init__(self, words: list[str], is_cap_diff: bool) -> None:
        self.words_and_emoticons = words
        self.is_cap_diff = is_cap_diff


class Vader(SentimentIntensityAnalyzer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        # polarity_scores replaces characters one at a time: only one-character entries can ever match.
        self._emoji_chars = frozenset(emoji for emoji in self.emojis if len(emoji) == 1)

    def compound(self, text: str) -> float:
        """``polarity_scores(text)["compound"]``."""
        if not self._emoji_chars.isdisjoint(text):
            return float(self.polarity_scores(text)["compound"])
        text = text.strip()  # what the emoji pass makes of a text without emoji
        lexicon = self.lexicon
        # SentiText's words (_strip_punc_if_word, inlined: a call per word was a tenth of the time).
        words = [stripped if len(stripped := token.strip(_PUNCTUATION)) > 2 else token for token in text.split()]
        lowered = [word.lower() for word in words]
        if lexicon.keys().isdisjoint(lowered):
            return 0.0  # every word's valence is 0, so is their sum, and normalize(0) is 0
        is_cap_diff = allcap_differential(words)
        last = len(words) - 1
        sentiments: list[float] = []
        for i, word in enumerate(lowered):
            # polarity_scores appends 0 for a booster and for "kind of", sentiment_valence for a word not in the
            # lexicon; anything else is its rules.
            if word not in lexicon or word in BOOSTER_DICT or (word == "kind" and i < last and lowered[i + 1] == "of"):
                sentiments.append(0)
                continue
            # The rules read the three words before and the two after (each look is guarded by its distance to
            # either end, so none wraps around): they run on that window, not on copies of the whole text.
            start = max(0, i - 3)
            window = _Window(words[start : i + 3], is_cap_diff)
            self.sentiment_valence(0, window, words[i], i - start, sentiments)
        sentiments = self._but_check(words, sentiments)
        return float(self.score_valence(sentiments, text)["compound"])


@lru_cache(maxsize=1)
def analyzer() -> Vader:
    return Vader()


def sentiment_of(subject: str | None, body: str | None) -> float | None:
    """VADER compound score of subject and body, from -1 (most negative) to 1; None without text."""
    text = " ".join(part for part in (subject, body) if part and part.strip())
    if not text:
        return None
    return round(analyzer().compound(text), 4)
