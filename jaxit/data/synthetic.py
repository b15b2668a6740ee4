"""A generated sentiment task for the offline demo: no downloads, deterministic from a seed.

Texts are short "reviews" (6-9 words) over a ~200-word vocabulary: positive and negative
words of strength 1 (weak), 2 (medium) or 3 (strong), ~100 neutral filler words, and the
negator "not". The label is decided by the words and their order alone:

    score = sum over sentiment words w of polarity(w) * strength(w) * (-1 if the word
            right before w is "not" else 1);      label = 1 (positive) if score > 0 else 0

The generator never produces score == 0 nor "not not". The three difficulty levels differ in
what a model has to compute, and so in how deep an encoder has to go:

- easy (difficulty 0):   1-2 medium or strong words of the label's polarity and no "not":
                         a bag-of-words lookup, which [CLS] can read off in one layer.
- medium (difficulty 1): 2-3 words that all agree once negation is resolved, at least one
                         of them negated and at least one plain, so their surface polarities
                         disagree ("not bad ... great"); "not"s before fillers bring the
                         count of "not"s up to the count of sentiment words. Which word a
                         "not" belongs to is a word-order question: tokens first look at
                         their left neighbour, then [CLS] collects the resolved words (two
                         steps); any one resolved word gives the answer.
- hard (difficulty 2):   one word, negated half of the time, and always two "not"s ("not
                         the plot ... not dull" vs "not the plot ... dull ... not a cut"): the
                         whole label hangs on one word-order relation among look-alike
                         tokens, with no second word to fall back on.

Within a difficulty, the words a text contains (how many "not"s, which sentiment words, the
length) are distributed the same for both labels, so no bag of words beats chance on medium
or hard examples: word order has to be used, which one attention layer does poorly and
deeper layers learn (see `jaxit demo`'s layer-wise accuracy by difficulty).

`synthetic_tokenizer()` is a `tokenizers` WordLevel tokenizer over this vocabulary with
BERT's special tokens ([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4) and BERT's template
([CLS] a [SEP] / [CLS] a [SEP] b [SEP] with token types 0/1).
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from jaxit.data.example import Example

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NEGATOR = "not"
MIN_WORDS, MAX_WORDS = 6, 9  # words per text (tokens: + [CLS] and [SEP])
DEFAULT_MIX = (0.3, 0.35, 0.35)  # easy, medium, hard

# polarity +1 / -1, strength 3 / 2 / 1
POSITIVE = {
    3: ("excellent", "superb", "outstanding", "brilliant", "magnificent", "wonderful",
        "fantastic", "marvelous", "exceptional", "perfect", "masterful", "stunning"),
    2: ("good", "great", "enjoyable", "pleasant", "lovely", "charming", "delightful",
        "impressive", "solid", "engaging", "clever", "moving"),
    1: ("fine", "decent", "okay", "nice", "fair", "adequate", "passable", "agreeable",
        "tolerable", "modest", "likable", "neat"),
}
NEGATIVE = {
    3: ("terrible", "awful", "horrible", "dreadful", "atrocious", "abysmal", "disastrous",
        "appalling", "dismal", "pathetic", "wretched", "unbearable"),
    2: ("bad", "poor", "boring", "dull", "weak", "sloppy", "tedious", "clumsy", "bland",
        "flat", "messy", "annoying"),
    1: ("mediocre", "uneven", "bumpy", "plain", "shaky", "slow", "stiff", "thin", "odd",
        "forgettable", "patchy", "lukewarm"),
}
NEUTRAL = (
    "the", "a", "an", "this", "that", "it", "its", "was", "is", "seemed", "felt", "looked",
    "and", "with", "of", "in", "on", "at", "for", "about", "from", "after", "before", "during",
    "movie", "film", "plot", "story", "actor", "actress", "scene", "scenes", "music", "camera",
    "ending", "beginning", "cast", "script", "director", "acting", "dialogue", "pace",
    "visuals", "soundtrack", "character", "characters", "hero", "villain", "set", "city",
    "night", "day", "time", "hour", "minute", "year", "sequel", "trailer", "theater", "screen",
    "audience", "critic", "friend", "family", "kids", "book", "novel", "budget", "studio",
    "cinema", "genre", "drama", "comedy", "thriller", "romance", "western", "documentary",
    "overall", "mostly", "somewhat", "again", "still", "also", "then", "there", "here",
    "today", "yesterday", "weekend", "evening", "morning", "popcorn", "ticket", "seat",
    "version", "cut", "edit", "frame", "shot", "sound", "color", "light", "costume", "makeup",
    "poster", "review", "rating", "premiere", "festival", "release", "series", "episode",
    "chapter", "moment", "line", "role", "part", "crew", "writer",
)

_LEXICON: dict[str, tuple[int, int]] = {}
for _pol, _table in ((1, POSITIVE), (-1, NEGATIVE)):
    for _s, _words in _table.items():
        for _w in _words:
            _LEXICON[_w] = (_pol, _s)

DIFFICULTY_NAMES = ("easy", "medium", "hard")


def synthetic_vocabulary() -> tuple[str, ...]:
    """All tokens in id order: the special tokens, then "not", sentiment and neutral words."""
    words = [NEGATOR] + [w for t in (POSITIVE, NEGATIVE) for s in (3, 2, 1) for w in t[s]]
    words += list(NEUTRAL)
    assert len(set(words)) == len(words), "duplicate word in the synthetic vocabulary"
    return SPECIAL_TOKENS + tuple(words)


def synthetic_score(text: str) -> int:
    """The task's scoring rule (see module docstring) on a whitespace-separated text."""
    words = text.lower().split()
    score = 0
    for i, w in enumerate(words):
        if w in _LEXICON:
            pol, strength = _LEXICON[w]
            neg = -1 if i > 0 and words[i - 1] == NEGATOR else 1
            score += pol * strength * neg
    return score


def synthetic_label(text: str) -> int:
    """1 if `synthetic_score(text) > 0` else 0."""
    return int(synthetic_score(text) > 0)


def _word(rng, polarity: int, strength: int) -> str:
    table = POSITIVE if polarity > 0 else NEGATIVE
    return table[strength][rng.integers(len(table[strength]))]


def _filler(rng) -> str:
    return NEUTRAL[rng.integers(len(NEUTRAL))]


def _phrases(rng, difficulty: int, target: int) -> list[list[str]]:
    """The example's phrases before shuffling and filling (see the module docstring): a
    sentiment word, with "not" before it when negated, or "not" + a filler (a distractor).
    Every phrase ends with a word other than "not", so after shuffling each "not" is still
    right before its own phrase's word, and "not not" never occurs."""
    sign = 1 if target else -1  # the polarity every word has once negation is resolved
    if difficulty == 0:
        return [[_word(rng, sign, int(rng.integers(2, 4)))]
                for _ in range(int(rng.integers(1, 3)))]
    if difficulty == 1:
        n = int(rng.integers(2, 4))
        negated = [False] * n
        while not 0 < sum(negated) < n:  # surface polarities must disagree
            negated = [bool(rng.random() < 0.5) for _ in range(n)]
    else:
        negated = [bool(rng.random() < 0.5)]
    phrases = [[NEGATOR, _word(rng, -sign, int(rng.integers(1, 4)))] if neg
               else [_word(rng, sign, int(rng.integers(1, 4)))] for neg in negated]
    # distractors top the "not"s up to a count that does not depend on what is negated
    n_not = len(negated) if difficulty == 1 else 2
    return phrases + [[NEGATOR, _filler(rng)] for _ in range(n_not - sum(negated))]


def _example(rng, difficulty: int, target: int, guid: str) -> Example:
    phrases = _phrases(rng, difficulty, target)
    n_words = sum(len(p) for p in phrases)
    length = int(rng.integers(max(MIN_WORDS, n_words + 1), MAX_WORDS + 1))
    phrases += [[_filler(rng)] for _ in range(length - n_words)]
    order = rng.permutation(len(phrases))
    text = " ".join(w for j in order for w in phrases[j])
    label = synthetic_label(text)
    assert label == target, (text, label, target)
    return Example(text, None, label, guid, difficulty)


def make_examples(n: int, seed: int, split: str = "train",
                  mix: tuple[float, float, float] = DEFAULT_MIX) -> list[Example]:
    """`n` examples, deterministic from (seed, split, index): the first k examples are the
    same whatever `n`. Difficulties drawn with probabilities `mix` (easy, medium, hard),
    labels 50/50 at random."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    p = np.asarray(mix, np.float64)
    if p.shape != (3,) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"mix must be three non-negative weights, got {mix}")
    stream = {"train": 0, "dev": 1, "test": 2}.get(split, 3)
    cdf = np.cumsum(p / p.sum())
    out = []
    for i in range(n):  # one generator per example: the first k examples never depend on n
        rng = np.random.default_rng([int(seed), stream, i])
        d = min(int(np.searchsorted(cdf, rng.random(), side="right")), 2)
        out.append(_example(rng, d, int(rng.integers(0, 2)), f"synthetic-{split}-{i}"))
    return out


def make_synthetic_task(n_train: int, n_dev: int, seed: int = 0,
                        mix: tuple[float, float, float] = DEFAULT_MIX
                        ) -> tuple[list[Example], list[Example]]:
    """(train, dev) `Example` lists of the synthetic task; `Example.difficulty` is 0 easy,
    1 medium, 2 hard. Train and dev come from independent streams of `seed`: the dev set for
    a seed does not depend on n_train, and a smaller set is a prefix of a larger one."""
    return make_examples(n_train, seed, "train", mix), make_examples(n_dev, seed, "dev", mix)


def synthetic_tokenizer() -> Tokenizer:
    """A WordLevel tokenizer over `synthetic_vocabulary()` with BERT-style special tokens and
    post-processing; padding and truncation off (jaxit pads to its buckets). Unknown words
    map to [UNK]; input is lower-cased and split on whitespace."""
    vocab = {w: i for i, w in enumerate(synthetic_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.no_padding()
    tok.no_truncation()
    return tok
