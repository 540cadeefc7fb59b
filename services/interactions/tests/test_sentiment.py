"""The faster VADER path gives exactly the score of VADER's own polarity_scores."""

from __future__ import annotations

import random

from vaderSentiment.vaderSentiment import BOOSTER_DICT, NEGATE, SPECIAL_CASES, SentimentIntensityAnalyzer

from services.interactions.sentiment import analyzer, sentiment_of

# Texts that reach each of VADER's rules: boosters, caps, negation near and far, "no", "least", "but",
# "kind of", idioms, "never so", "without doubt", punctuation emphasis, emoji, emoticons, contractions.
FIXED = [
    "",
    "   ",
    "Where is my order?",
    "VADER is smart, handsome, and funny.",
    "VADER is VERY SMART, handsome, and FUNNY!!!",
    "The book was kind of good.",
    "Today SUX!",
    "Not bad at all",
    "At least it isn't a horrible book.",
    "least good thing ever",
    "very least good",
    "The plot was good, but the characters are uncompelling and the dialog is not great.",
    "no good at all",
    "there is no problem",
    "no or nor bad",
    "never so happy",
    "never this sad",
    "without doubt excellent",
    "without a doubt excellent",
    "that was the bomb",
    "bad ass service",
    "the shit",
    "it cut the mustard",
    "Make sure you :) or :D today!",
    "Catch utf-8 emoji such as 💘 and 💋 and 😁",
    "Not bad 😁😁",
    "I don't like it, it isn't good",
    "It's OK?? Really??? OK????",
    "GREAT!!!!! just GREAT",
    "sort of okay, kind of nice",
    "kind",
    "kind of",
    "Thanks for the quick help",
    "Broken on arrival, very disappointed",
    "\tLoved\nthe new collection\u00a0",
]


def corpus(seed: int, count: int) -> list[str]:
    analyzer_ = analyzer()
    rng = random.Random(seed)
    lexicon = sorted(analyzer_.lexicon)
    boosters = sorted(BOOSTER_DICT)
    specials = sorted(SPECIAL_CASES)
    plain = ["order", "the", "my", "is", "at", "very", "so", "this", "never", "without", "doubt", "but", "BUT",
             "kind", "of", "least", "no", "nor", "or", "isn't", "n't", "refund", "arrive", "..."]  # fmt: skip
    emoji = sorted(analyzer_.emojis)
    pools = [lexicon, boosters, sorted(NEGATE), plain, plain, lexicon, specials]
    texts = []
    for _ in range(count):
        words = []
        for _ in range(rng.randint(1, 14)):
            word = rng.choice(rng.choice(pools))
            if rng.random() < 0.1:
                word = word.upper()
            if rng.random() < 0.15:
                word += rng.choice(["!", "?", ",", ".", "!!", "???", ":)", "'"])
            if rng.random() < 0.02:
                word = rng.choice(emoji)
            words.append(word)
        texts.append(rng.choice([" ", "  ", "\n"]).join(words) + rng.choice(["", " ", "!", "?!"]))
    return texts


def test_compound_is_vaders_own_score() -> None:
    stock = SentimentIntensityAnalyzer()
    fast = analyzer()
    texts = FIXED + corpus(seed=1, count=6000)
    differing = [t for t in texts if fast.compound(t) != stock.polarity_scores(t)["compound"]]
    assert differing == []
    # The corpus reaches both paths and all three signs.
    scores = {fast.compound(t) for t in texts}
    assert min(scores) < 0 < max(scores) and 0.0 in scores


def test_sentiment_of_joins_subject_and_body() -> None:
    stock = SentimentIntensityAnalyzer()
    both = stock.polarity_scores("Broken again Terrible.")["compound"]
    assert sentiment_of("Broken again", "Terrible.") == round(both, 4)
    assert sentiment_of(None, "Great") == round(stock.polarity_scores("Great")["compound"], 4)
    assert sentiment_of("  ", None) is None and sentiment_of(None, None) is None
