"""A generated sentiment task for the offline demo: no downloads, deterministic from a seed.

Texts are short "reviews" over a ~200-word vocabulary: positive and negative words of
strength 1 (weak), 2 (medium) or 3 (strong), ~100 neutral filler words, and the negator
"not". The label is decided by the words alone:

    score = sum over sentiment words w of polarity(w) * strength(w) * (-1 if the word
            right before w is "not" else 1);      label = 1 (positive) if score > 0 else 0

and the generator never produces score == 0. Examples differ in how much work that takes:

- easy (difficulty 0):   one strong word among fillers: spotting it decides the label, so an
                         early layer can answer;
- medium (difficulty 1): 2-3 words of mixed strength, sometimes one negated; |score| >= 2;
- hard (difficulty 2):   3-5 weak/medium words of both polarities, 1-2 negations and a
                         distracting "not" before a filler; |score| == 1, so the answer
                         needs every word, its strength and its negation (more layers).

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


def _sign(rng) -> int:
    return 1 if rng.random() < 0.5 else -1


def _items(rng, difficulty: int) -> tuple[list[tuple[int, int, bool]], bool]:
    """Sentiment items (polarity, strength, negated) meeting the difficulty's rule, and
    whether to add a distracting "not" before a filler."""
    while True:
        if difficulty == 0:
            items = [(_sign(rng), 3, False)]
            return items, False
        if difficulty == 1:
            k = int(rng.integers(2, 4))
            items = [(_sign(rng), int(rng.integers(1, 4)), False) for _ in range(k)]
            if rng.random() < 0.5:
                j = int(rng.integers(k))
                items[j] = (items[j][0], items[j][1], True)
            score = sum(p * s * (-1 if n else 1) for p, s, n in items)
            if abs(score) >= 2:
                return items, False
        else:
            k = int(rng.integers(3, 6))
            items = [(_sign(rng), int(rng.integers(1, 3)), False) for _ in range(k)]
            for j in rng.permutation(k)[:int(rng.integers(1, 3))]:
                items[j] = (items[j][0], items[j][1], True)
            pols = {p for p, _, _ in items}
            score = sum(p * s * (-1 if n else 1) for p, s, n in items)
            if abs(score) == 1 and len(pols) == 2:
                return items, True


def _example(rng, difficulty: int, target: int, guid: str) -> Example:
    items, distractor = _items(rng, difficulty)
    score = sum(p * s * (-1 if n else 1) for p, s, n in items)
    if (score > 0) != bool(target):  # flip every polarity: the score changes sign
        items = [(-p, s, n) for p, s, n in items]
    phrases = [[NEGATOR, _word(rng, p, s)] if n else [_word(rng, p, s)] for p, s, n in items]
    n_words = sum(len(p) for p in phrases)
    length = int(rng.integers(max(6, n_words + 2), 21))
    if distractor:
        phrases.append([NEGATOR, NEUTRAL[rng.integers(len(NEUTRAL))]])
        n_words += 2
    phrases += [[NEUTRAL[rng.integers(len(NEUTRAL))]] for _ in range(max(0, length - n_words))]
    order = rng.permutation(len(phrases))
    text = " ".join(w for j in order for w in phrases[j])
    label = synthetic_label(text)
    assert label == target, (text, label, target)
    return Example(text, None, label, guid, difficulty)


def make_examples(n: int, seed: int, split: str = "train",
                  mix: tuple[float, float, float] = (0.4, 0.3, 0.3)) -> list[Example]:
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
                        mix: tuple[float, float, float] = (0.4, 0.3, 0.3)
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
