"""Batched text augmentations for contrastive sentence-embedding training (EDA-style word ops).

Every op takes a whole batch, a list of sentences, and gives each sentence its own random draw.
Like the image ops, all randomness comes from ``torch.rand`` on the CPU, from the given
``torch.Generator`` or else torch's default CPU generator (which ``torch.manual_seed`` seeds): one
seed reproduces a run on any machine. Each op draws a fixed number of values per word or per
sentence whatever it ends up doing, so what an op draws never depends on the text's content (a
synonym table or a paraphraser's output cannot shift the random stream of the ops after it).

Words are the whitespace-separated pieces of a sentence (``str.split()``), and the word ops rejoin
them with single spaces: runs of spaces, tabs and newlines come back as one space, even from an op
that changed nothing. Punctuation stays glued to its word ("happy," is one word). Subword
tokenisation is the encoder's tokenizer's business, after the augmentation.

WordNet, for :class:`SynonymReplacement`, comes from NLTK's corpus when ``nltk`` and its wordnet
data are installed, else from Debian's ``wordnet-base`` database files in /usr/share/wordnet; it
is loaded once per process, on first use.

Example:
    >>> aug = TextCompose([WordDeletion(p=0.1), WordSwap(n=1), RandomMask(p=0.15)])
    >>> batch = ["a cat sat on the mat", "contrastive learning pulls views together"]
    >>> view1, view2 = aug(batch), aug(batch)          # two random views of each sentence
    >>> seeded = aug(batch, torch.Generator().manual_seed(0))
    >>> seeded == aug(batch, torch.Generator().manual_seed(0))
    True
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from pathlib import Path

import torch

from contrastkit._checks import check_count
from contrastkit.augment.image import _check_prob
from contrastkit.errors import ConfigError, InputError

__all__ = [
    "TextTransform",
    "WordDeletion",
    "WordSwap",
    "RandomMask",
    "SynonymReplacement",
    "Paraphrase",
    "TextCompose",
]

# Where Debian's (and Ubuntu's) wordnet-base package puts the WordNet 3.0 database.
_DEBIAN_WORDNET = Path("/usr/share/wordnet")
_WORDNET_POS = ("noun", "verb", "adj", "adv")
_WORDNET_HINT = (
    "pip install nltk and python -m nltk.downloader wordnet, or apt-get install wordnet-base "
    f"(read from {_DEBIAN_WORDNET}), or pass wordnet={{word: [synonyms, ...]}}"
)
# A word's leading and trailing punctuation, kept in place around a synonym: "(happy)," -> "(glad),".
_AFFIXES = re.compile(r"^(\W*)(.*?)(\W*)$")


# ----------------------------------------------------------------------------- checks and draws


def _check_texts(texts: Sequence[str]) -> list[str]:
    if not isinstance(texts, (list, tuple)):
        hint = "; wrap a single sentence in a list" if isinstance(texts, str) else ""
        raise InputError(f"texts must be a list of str (one sentence per sample), got {type(texts).__name__}{hint}.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"texts must hold only str, got {type(text).__name__} at index {i}.")
    return list(texts)


def _check_generator(generator: torch.Generator | None) -> torch.Generator | None:
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
    if generator.device.type != "cpu":
        raise InputError(
            f"generator must be a CPU torch.Generator, got one on {generator.device}: text ops draw on the "
            "CPU so that a seed gives the same augmentations on every machine."
        )
    return generator


def _uniform(n: int, generator: torch.Generator | None) -> list[float]:
    """n draws of U[0, 1) from the CPU generator (torch's default one without a generator)."""
    # device="cpu" even under torch.set_default_device("cuda"): the default generator would then be
    # the GPU's, whose stream differs from the CPU's for the same seed.
    return torch.rand(n, generator=generator, dtype=torch.float64, device="cpu").tolist()


def _index(u: float, n: int) -> int:
    """A uniform index in [0, n) from u ~ U[0, 1); min() guards against u * n rounding up to n."""
    return min(int(u * n), n - 1)


# ----------------------------------------------------------------------------- base classes


class TextTransform:
    """Base of the text augmentations: ``transform(texts, generator) -> list[str]`` on a batch.

    ``__call__`` checks the batch (a list or tuple of str) and the generator (a CPU
    ``torch.Generator`` or None) and returns a new list, one output per input sentence. Subclasses
    implement :meth:`transform` and draw their randomness with ``torch.rand`` / ``torch.randint`` /
    ``torch.randperm`` from ``generator`` (on the CPU), never from ``random`` or numpy.
    """

    def __call__(self, texts: Sequence[str], generator: torch.Generator | None = None) -> list[str]:
        return self.transform(_check_texts(texts), _check_generator(generator))

    def transform(self, texts: list[str], generator: torch.Generator | None) -> list[str]:
        """Augment the checked batch ``texts``; each sentence gets its own random draw."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        """The options shown by ``repr``."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class _WordTransform(TextTransform):
    """An op on each sentence's words: split on whitespace, transformed, rejoined with single spaces."""

    def transform(self, texts: list[str], generator: torch.Generator | None) -> list[str]:
        return [" ".join(words) for words in self.transform_words([t.split() for t in texts], generator)]

    def transform_words(self, sentences: list[list[str]], generator: torch.Generator | None) -> list[list[str]]:
        raise NotImplementedError


# ----------------------------------------------------------------------------- word ops


class WordDeletion(_WordTransform):
    """Drop each word with probability ``p``; the kept words stay in order.

    A sentence never comes back empty: when every word would go, one of them, drawn uniformly, is
    kept (a sentence without words comes back as "").

    Example:
        >>> WordDeletion(p=0.0)(["keep  every\\tword"])
        ['keep every word']
        >>> len(WordDeletion(p=1.0)(["only one word survives"])[0].split())
        1
    """

    def __init__(self, p: float = 0.1) -> None:
        self.p = _check_prob("p", p)

    def transform_words(self, sentences: list[list[str]], generator: torch.Generator | None) -> list[list[str]]:
        drop = iter(_uniform(sum(map(len, sentences)), generator))
        fallback = _uniform(len(sentences), generator)
        out = []
        for words, u in zip(sentences, fallback):
            kept = [w for w, d in zip(words, drop) if d >= self.p]  # rand in [0, 1): p=0 keeps all, p=1 none
            out.append(kept if kept or not words else [words[_index(u, len(words))]])
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"


class WordSwap(_WordTransform):
    """Swap the words at two distinct random positions, ``n`` times per sentence (one swap can undo
    an earlier one); sentences of fewer than 2 words are left as they are.

    Example:
        >>> out = WordSwap(n=2)(["one two three four"], torch.Generator().manual_seed(0))
        >>> sorted(out[0].split())
        ['four', 'one', 'three', 'two']
    """

    def __init__(self, n: int = 1) -> None:
        check_count("n", n, 0, "the number of word pairs to swap per sentence, usually 1 or 2.")
        self.n = int(n)

    def transform_words(self, sentences: list[list[str]], generator: torch.Generator | None) -> list[list[str]]:
        u = iter(_uniform(2 * self.n * len(sentences), generator))
        out = []
        for words in sentences:
            words = list(words)
            for _ in range(self.n):
                a, b = next(u), next(u)
                if len(words) >= 2:
                    # j uniform over the positions other than i: distinct without a rejection loop.
                    i = _index(a, len(words))
                    j = _index(b, len(words) - 1)
                    j += j >= i
                    words[i], words[j] = words[j], words[i]
            out.append(words)
        return out

    def extra_repr(self) -> str:
        return f"n={self.n}"


class RandomMask(_WordTransform):
    """Replace each word with ``mask_token`` with probability ``p``.

    The default ``"[MASK]"`` is BERT's mask token; the encoder's tokenizer decides how the token is
    read, so give the one of the model in use (``"<mask>"`` for RoBERTa), or any placeholder.

    Example:
        >>> RandomMask(p=1.0)(["the cat sat"])
        ['[MASK] [MASK] [MASK]']
        >>> RandomMask(p=1.0, mask_token="<mask>")(["hi there"])
        ['<mask> <mask>']
    """

    def __init__(self, p: float = 0.15, mask_token: str = "[MASK]") -> None:
        self.p = _check_prob("p", p)
        if not isinstance(mask_token, str) or not mask_token or any(c.isspace() for c in mask_token):
            raise ConfigError(
                f"mask_token must be a non-empty str without whitespace (it replaces one word), got {mask_token!r}; "
                "use the tokenizer's mask token, e.g. '[MASK]' for BERT or '<mask>' for RoBERTa."
            )
        self.mask_token = mask_token

    def transform_words(self, sentences: list[list[str]], generator: torch.Generator | None) -> list[list[str]]:
        u = iter(_uniform(sum(map(len, sentences)), generator))
        return [[self.mask_token if next(u) < self.p else w for w in words] for words in sentences]

    def extra_repr(self) -> str:
        return f"p={self.p}, mask_token={self.mask_token!r}"


# ----------------------------------------------------------------------------- synonyms


class _WordNet:
    """A WordNet lemma -> synonyms lookup: computed per lemma on first use and cached (the cache is
    bounded by WordNet's vocabulary, as words outside it are answered without one).

    ``synsets(lemma)`` gives the lemma lists of the synsets holding ``lemma``, in WordNet's spelling
    (any case, '_' between the words of a multi-word lemma).
    """

    def __init__(self, lemmas: Container[str], synsets: Callable[[str], Iterable[Sequence[str]]]) -> None:
        self._lemmas = lemmas
        self._synsets = synsets
        self._cache: dict[str, tuple[str, ...]] = {}

    def __call__(self, word: str) -> tuple[str, ...]:
        """Sorted synonyms of the lower-case ``word`` (never ``word`` itself), () for unknown words."""
        if word not in self._lemmas:
            return ()
        synonyms = self._cache.get(word)
        if synonyms is None:
            names = {name.lower() for names in self._synsets(word) for name in names}
            names.discard(word)
            # Sorted: the draw from a given seed does not depend on which source read WordNet.
            synonyms = self._cache[word] = tuple(sorted(name.replace("_", " ") for name in names))
        return synonyms


@functools.cache
def _nltk_wordnet() -> _WordNet | None:
    """WordNet through NLTK, or None when nltk or its wordnet data is missing."""
    try:
        from nltk.corpus import wordnet
    except ImportError:
        return None
    try:
        lemmas = frozenset(wordnet.all_lemma_names())  # the first access loads the corpus
    except LookupError:  # nltk is installed, its wordnet data is not
        return None

    def synsets(word: str) -> list[list[str]]:
        # lemmas() keeps the synsets where word is a lemma itself, not those that morphy reaches from
        # an inflected form ("dogs" -> "dog"): the same answer as a lookup in WordNet's index files.
        return [lemma.synset().lemma_names() for lemma in wordnet.lemmas(word)]

    return _WordNet(lemmas, synsets)


@functools.cache
def _debian_wordnet(directory: Path) -> _WordNet | None:
    """WordNet 3.0 read from the ``data.*`` files in ``directory``, or None when they are missing.

    Each synset line of a data file lists its lemmas, which is all a synonym lookup needs: one pass
    over the four files (about half a second) maps every lemma to its synsets, so the ``index.*``
    files, the lemma -> synset offsets map of a seeking reader, are not read.
    """
    paths = [directory / f"data.{pos}" for pos in _WORDNET_POS]
    if not all(path.is_file() for path in paths):
        return None
    synsets: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.startswith(" "):  # the licence header's lines start with two spaces
                    continue
                # "offset lex_filenum ss_type w_cnt (word lex_id){w_cnt} p_cnt ... | gloss", w_cnt in hex
                fields = line.split(" ")
                try:
                    count = int(fields[3], 16)
                except (IndexError, ValueError):
                    raise ConfigError(
                        f"{path}:{number} is not a WordNet data line; the database looks damaged, reinstall it "
                        "(apt-get install --reinstall wordnet-base)."
                    ) from None
                if count < 2:  # a synset of one lemma gives it no synonym
                    continue
                # Adjectives may carry a syntactic marker, "galore(ip)": the only '(' in WordNet's lemmas.
                names = tuple(w.partition("(")[0].lower() for w in fields[4:4 + 2 * count:2])
                for name in names:
                    synsets.setdefault(name, []).append(names)
    return _WordNet(synsets, synsets.__getitem__)


def _default_wordnet() -> _WordNet:
    source = _nltk_wordnet()
    if source is None:
        source = _debian_wordnet(_DEBIAN_WORDNET)
    if source is None:
        raise ConfigError(f"SynonymReplacement needs WordNet, which was not found: {_WORDNET_HINT}.")
    return source


def _synonym_table(table: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Lower-case single-word keys -> their deduplicated synonyms, whitespace-normalised, without the key."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"wordnet must be a mapping word -> list of synonyms, got {type(table).__name__}.")
    merged: dict[str, list[str]] = {}
    for key, synonyms in table.items():
        if not isinstance(key, str) or not key or any(c.isspace() for c in key):
            raise ConfigError(
                f"wordnet keys must be single words (non-empty str without whitespace), got {key!r}: "
                "sentences are looked up one whitespace-separated word at a time."
            )
        # A bare str is a Sequence[str] too, of its letters: {"happy": "glad"} would give "g", "l", ...
        if isinstance(synonyms, str) or not isinstance(synonyms, Sequence) or not all(
            isinstance(s, str) and s.split() for s in synonyms
        ):
            raise ConfigError(f"wordnet[{key!r}] must be a list of non-empty str synonyms, got {synonyms!r}.")
        word = key.lower()
        known = merged.setdefault(word, [])
        for synonym in synonyms:
            synonym = " ".join(synonym.split())
            if synonym.lower() != word and synonym not in known:
                known.append(synonym)
    return {word: tuple(synonyms) for word, synonyms in merged.items() if synonyms}


class SynonymReplacement(_WordTransform):
    """Replace each word that has synonyms, with probability ``p``, by one of them drawn uniformly.

    A word is looked up lower-cased and without its leading and trailing punctuation, which stays in
    place ("Happy," -> "Glad,"); a capital first letter is kept. Synonyms never include the word
    itself and may be several words ("railway car").

    ``wordnet=None`` reads WordNet 3.0's synonyms (noun, verb, adjective and adverb synsets) from
    NLTK's corpus when ``nltk`` and its wordnet data are installed, else from Debian's
    ``wordnet-base`` files in /usr/share/wordnet; without either the constructor raises
    :class:`~contrastkit.errors.ConfigError` with the install steps. WordNet's lemmas come
    lower-cased, with the '_' between the words of a multi-word lemma turned into a space. WordNet
    is loaded once per process (NLTK's load, or half a second to read the Debian files) and looked
    up per word through a cache.

    ``wordnet`` may instead be a table word -> synonyms (a custom thesaurus, or a fixed one for
    tests): keys are matched case-insensitively, synonyms used as given.

    Example:
        >>> aug = SynonymReplacement(p=1.0, wordnet={"happy": ["glad"], "quick": ["fast", "rapid"]})
        >>> aug(["Happy dogs are happy."])
        ['Glad dogs are glad.']
        >>> aug(["a quick fox"], torch.Generator().manual_seed(0))[0] in ("a fast fox", "a rapid fox")
        True
    """

    def __init__(self, p: float = 0.1, wordnet: Mapping[str, Sequence[str]] | None = None) -> None:
        self.p = _check_prob("p", p)
        # WordNet is not stored but looked up per call (from the per-process cache), so the op
        # pickles to DataLoader workers; loading it here raises a missing install at construction.
        self._table = None if wordnet is None else _synonym_table(wordnet)
        if self._table is None:
            _default_wordnet()

    def transform_words(self, sentences: list[list[str]], generator: torch.Generator | None) -> list[list[str]]:
        lookup = _default_wordnet() if self._table is None else self._table.get
        total = sum(map(len, sentences))
        apply, pick = iter(_uniform(total, generator)), iter(_uniform(total, generator))
        out = []
        for words in sentences:
            new = []
            for word, a, b in zip(words, apply, pick):
                prefix, core, suffix = _AFFIXES.match(word).groups()  # type: ignore[union-attr]  # always matches
                synonyms = lookup(core.lower()) if a < self.p and core else None
                if synonyms:
                    synonym = synonyms[_index(b, len(synonyms))]
                    if core[0].isupper():
                        synonym = synonym[0].upper() + synonym[1:]
                    word = prefix + synonym + suffix
                new.append(word)
            out.append(new)
        return out

    def extra_repr(self) -> str:
        source = "WordNet" if self._table is None else f"table of {len(self._table)} words"
        return f"p={self.p}, wordnet={source}"


# ----------------------------------------------------------------------------- sentence ops


class Paraphrase(TextTransform):
    """Rewrite sentences with ``fn``, any callable list[str] -> list[str]: back-translation, an LLM,
    a rule-based rewriter.

    Each sentence is sent with probability ``p``; the chosen ones go to ``fn`` in one call (none
    when no sentence is chosen), in batch order, and ``fn`` must return one str per sentence it got.
    Its output is used as is, without the word ops' whitespace normalisation.

    Example:
        >>> Paraphrase(lambda batch: [s.upper() for s in batch])(["hello world", "bye"])
        ['HELLO WORLD', 'BYE']
        >>> Paraphrase(lambda batch: [s.upper() for s in batch], p=0.0)(["hello world"])
        ['hello world']
    """

    def __init__(self, fn: Callable[[list[str]], Sequence[str]], p: float = 1.0) -> None:
        if not callable(fn):
            raise ConfigError(f"fn must be a callable list[str] -> list[str], got {type(fn).__name__}.")
        self.fn = fn
        self.p = _check_prob("p", p)

    def transform(self, texts: list[str], generator: torch.Generator | None) -> list[str]:
        chosen = [i for i, u in enumerate(_uniform(len(texts), generator)) if u < self.p]
        if not chosen:
            return texts
        rewritten = self.fn([texts[i] for i in chosen])
        name = self._fn_name()
        if isinstance(rewritten, str) or not isinstance(rewritten, (list, tuple)):
            raise InputError(
                f"Paraphrase's fn {name} must return a list of str, one per sentence it is given, "
                f"got {type(rewritten).__name__}."
            )
        if len(rewritten) != len(chosen):
            raise InputError(
                f"Paraphrase's fn {name} returned {len(rewritten)} sentences for {len(chosen)}; it must return "
                "exactly one per input sentence, in order."
            )
        for i, text in enumerate(rewritten):
            if not isinstance(text, str):
                raise InputError(
                    f"Paraphrase's fn {name} must return only str, got {type(text).__name__} at index {i}."
                )
        out = list(texts)
        for i, text in zip(chosen, rewritten):
            out[i] = text
        return out

    def _fn_name(self) -> str:
        return getattr(self.fn, "__qualname__", type(self.fn).__name__)

    def extra_repr(self) -> str:
        return f"fn={self._fn_name()}, p={self.p}"


class TextCompose(TextTransform):
    """Apply text transforms in order, all drawing from the same generator.

    Example:
        >>> aug = TextCompose([SynonymReplacement(p=1.0, wordnet={"big": ["large"]}), RandomMask(p=0.0)])
        >>> aug(["a big   dog"])
        ['a large dog']
    """

    def __init__(self, transforms: Sequence[TextTransform]) -> None:
        if not isinstance(transforms, (list, tuple)):
            raise ConfigError(f"TextCompose takes a list of TextTransform, got {type(transforms).__name__}.")
        for t in transforms:
            if not isinstance(t, TextTransform):
                raise ConfigError(f"TextCompose takes TextTransform instances, got {type(t).__name__}.")
        self.transforms = list(transforms)

    def transform(self, texts: list[str], generator: torch.Generator | None) -> list[str]:
        for t in self.transforms:
            # Through __call__, which checks what the previous step returned: a custom transform's
            # bad return value is reported before the next step trips on it.
            texts = t(texts, generator)
        return texts

    def extra_repr(self) -> str:
        return ", ".join(map(repr, self.transforms))
