"""Behaviour of the batched text augmentations (contrastkit.augment.text)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from contrastkit.augment import text
from contrastkit.augment.text import (
    Paraphrase,
    RandomMask,
    SynonymReplacement,
    TextCompose,
    TextTransform,
    WordDeletion,
    WordSwap,
)
from contrastkit.errors import ConfigError, InputError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def upper(batch: list[str]) -> list[str]:
    return [s.upper() for s in batch]


def numbered(n: int, prefix: str = "w") -> str:
    """A sentence of n distinct words, so positions can be traced through an op."""
    return " ".join(f"{prefix}{i}" for i in range(n))


SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "contrastive learning pulls two views of a sentence together",
    "one",
    "",
    "a b",
]
LONG_BATCH = [numbered(12, prefix=f"s{k}_") for k in range(32)]
TABLE = {"quick": ["fast", "rapid"], "happy": ["glad"], "dog": ["hound", "pooch"]}

# Every op with randomness, at settings where it changes most sentences.
RANDOM_OPS = {
    "deletion": lambda: WordDeletion(p=0.3),
    "swap": lambda: WordSwap(n=2),
    "mask": lambda: RandomMask(p=0.3),
    "synonym": lambda: SynonymReplacement(p=0.5, wordnet={f"s{k}_{i}": ["x", "y", "z"] for k in range(32)
                                                          for i in range(12)}),
    "paraphrase": lambda: Paraphrase(lambda batch: [s[::-1] for s in batch], p=0.5),
    "compose": lambda: TextCompose([WordDeletion(p=0.2), WordSwap(), RandomMask(p=0.2)]),
}


@pytest.fixture
def wordnet() -> text._WordNet:
    try:
        return text._default_wordnet()
    except ConfigError:
        pytest.skip("no WordNet here: neither nltk's wordnet data nor Debian's wordnet-base (/usr/share/wordnet)")


def debian_wordnet() -> text._WordNet:
    source = text._debian_wordnet(text._DEBIAN_WORDNET)
    if source is None:
        pytest.skip(f"Debian's wordnet-base is not installed ({text._DEBIAN_WORDNET}/data.* missing)")
    return source


# ----------------------------------------------------------------------------- generic properties


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_one_str_per_sentence_and_input_untouched(name: str) -> None:
    batch = list(SENTENCES)
    out = RANDOM_OPS[name]()(batch, gen())
    assert isinstance(out, list) and len(out) == len(batch)
    assert all(isinstance(s, str) for s in out)
    assert batch == SENTENCES
    assert RANDOM_OPS[name]()((), gen()) == []
    assert RANDOM_OPS[name]()(tuple(batch), gen()) == out


@pytest.mark.parametrize("op", [WordDeletion(p=0.0), WordSwap(n=0), RandomMask(p=0.0),
                                SynonymReplacement(p=0.0, wordnet=TABLE)], ids=repr)
def test_word_ops_identity_up_to_whitespace(op: TextTransform) -> None:
    assert op(SENTENCES, gen()) == SENTENCES
    # Words are whitespace-split and rejoined with single spaces, even when nothing changes.
    assert op([" a\t b \n\nc  ", "   "], gen()) == ["a b c", ""]


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_same_seed_same_output_different_seeds_differ(name: str) -> None:
    op = RANDOM_OPS[name]()
    assert op(LONG_BATCH, gen(1)) == op(LONG_BATCH, gen(1))
    assert op(LONG_BATCH, gen(1)) != op(LONG_BATCH, gen(2))
    # Each sentence gets its own draw: identical sentences in one batch come out differently.
    assert len(set(op([LONG_BATCH[0]] * 16, gen(3)))) > 1


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_global_seed_drives_the_default_generator(name: str) -> None:
    op = RANDOM_OPS[name]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        first = op(LONG_BATCH)
        torch.manual_seed(7)
        again = op(LONG_BATCH)
    assert first == again == op(LONG_BATCH, gen(7))


def test_draws_do_not_depend_on_the_text_content() -> None:
    # Same batch shape, different words and synonym tables: the generator ends in the same state,
    # so the ops after these in a pipeline see the same random stream.
    g1, g2 = gen(), gen()
    SynonymReplacement(p=0.5, wordnet=TABLE)(["the quick dog", "happy"], g1)
    SynonymReplacement(p=0.5, wordnet={"x": ["y"]})(["x y z", "w"], g2)
    WordDeletion(p=1.0)(["a b c d"], g1)
    WordDeletion(p=0.0)(["e f g h"], g2)
    assert torch.equal(g1.get_state(), g2.get_state())


# ----------------------------------------------------------------------------- WordDeletion


def test_deletion_keeps_order_and_only_removes() -> None:
    sentence = numbered(40)
    for seed in range(20):
        kept = WordDeletion(p=0.5)([sentence], gen(seed))[0].split()
        assert kept
        positions = [int(w[1:]) for w in kept]
        assert positions == sorted(set(positions))  # a subsequence: in order, no repeats, no new words


def test_deletion_never_empty_and_p1_keeps_one_random_word() -> None:
    sentence = numbered(10)
    outs = [WordDeletion(p=1.0)([sentence, "solo"], gen(seed)) for seed in range(40)]
    assert all(len(out[0].split()) == 1 and out[0] in sentence.split() and out[1] == "solo" for out in outs)
    assert len({out[0] for out in outs}) > 3  # the survivor is drawn, not always the first word
    assert all(WordDeletion(p=0.9)(LONG_BATCH, gen(seed)).count("") == 0 for seed in range(5))


def test_deletion_rate_is_about_p() -> None:
    n, p = 2000, 0.3
    kept = len(WordDeletion(p=p)([numbered(n)], gen())[0].split())
    sigma = (n * p * (1 - p)) ** 0.5
    assert abs((n - kept) - n * p) < 4 * sigma


# ----------------------------------------------------------------------------- WordSwap


def test_swap_keeps_the_words() -> None:
    for seed in range(20):
        for sentence, out in zip(SENTENCES, WordSwap(n=3)(SENTENCES, gen(seed))):
            assert Counter(out.split()) == Counter(sentence.split())


def test_one_swap_exchanges_two_distinct_positions() -> None:
    words = numbered(8).split()
    seen = set()
    for seed in range(40):
        out = WordSwap(n=1)([" ".join(words)], gen(seed))[0].split()
        moved = [i for i, (a, b) in enumerate(zip(words, out)) if a != b]
        assert len(moved) == 2 and out[moved[0]] == words[moved[1]] and out[moved[1]] == words[moved[0]]
        seen.add(tuple(moved))
    assert len(seen) > 5


def test_swap_leaves_short_sentences() -> None:
    assert WordSwap(n=5)(["", "one", " two "], gen()) == ["", "one", "two"]
    assert WordSwap(n=1)(["a b"], gen()) == ["b a"]


# ----------------------------------------------------------------------------- RandomMask


def test_mask_extremes_and_token() -> None:
    assert RandomMask(p=1.0)(["a b c"], gen()) == ["[MASK] [MASK] [MASK]"]
    out = RandomMask(p=0.5, mask_token="<mask>")([numbered(50)], gen())[0].split()
    assert all(w in ("<mask>", f"w{i}") for i, w in enumerate(out))


def test_mask_rate_is_about_p() -> None:
    n, p = 2000, 0.15
    masked = RandomMask(p=p)([numbered(n)], gen())[0].split().count("[MASK]")
    sigma = (n * p * (1 - p)) ** 0.5
    assert abs(masked - n * p) < 4 * sigma


# ----------------------------------------------------------------------------- SynonymReplacement


def test_synonyms_come_from_the_table_only() -> None:
    sentence = "the quick dog is happy and the dog is quick"
    for seed in range(20):
        out = SynonymReplacement(p=1.0, wordnet=TABLE)([sentence], gen(seed))[0].split()
        for word, new in zip(sentence.split(), out):
            assert new in TABLE.get(word, [word])


def test_synonym_rate_is_about_p() -> None:
    n, p = 2000, 0.25
    out = SynonymReplacement(p=p, wordnet={"dog": ["hound"]})([" ".join(["dog"] * n)], gen())[0]
    sigma = (n * p * (1 - p)) ** 0.5
    assert abs(out.split().count("hound") - n * p) < 4 * sigma


def test_synonym_case_punctuation_and_multiword() -> None:
    op = SynonymReplacement(p=1.0, wordnet={"Happy": ["glad"], "car": ["motor vehicle"]})
    assert op(["Happy, happy (HAPPY) car."], gen()) == ["Glad, glad (Glad) motor vehicle."]
    assert op(["happiness ,,, unhappy"], gen()) == ["happiness ,,, unhappy"]


def test_synonym_table_is_normalised() -> None:
    # Keys match case-insensitively and merge; the word itself and repeats are dropped.
    op = SynonymReplacement(p=1.0, wordnet={"Happy": ["happy", "glad", "glad"], "HAPPY": ["HAPPY", "glad"],
                                            "lone": ["Lone"]})
    assert {op(["happy lone"], gen(seed))[0] for seed in range(10)} == {"glad lone"}


@pytest.mark.parametrize("table, message", [
    ({"happy": "glad"}, "list of non-empty str"),
    ({"happy": ["glad", ""]}, "list of non-empty str"),
    ({"happy": [None]}, "list of non-empty str"),
    ({"very happy": ["glad"]}, "single words"),
    ({1: ["one"]}, "single words"),
    ([("happy", ["glad"])], "mapping"),
])
def test_bad_synonym_tables_refused(table: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SynonymReplacement(p=0.5, wordnet=table)  # type: ignore[arg-type]


def test_wordnet_data_files_parsed(tmp_path: Path) -> None:
    # A tiny database in WordNet 3.0's data-file format: runs everywhere, WordNet installed or not.
    header = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    files = {
        "noun": ["00001740 03 n 02 Einstein 0 Albert_Einstein 0 000 | physicist",
                 "00002000 03 n 03 car 0 auto 0 railway_car 0 000 | a vehicle",
                 "00003000 03 n 01 xyzzy 0 000 | no synonyms"],
        "verb": ["00001000 29 v 02 run 0 race 0 000 | go fast"],
        "adj": ["00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | plenty"],
        "adv": ["00001000 02 r 0a a1 0 a2 0 a3 0 a4 0 a5 0 a6 0 a7 0 a8 0 a9 0 car 0 000 | hex word count"],
    }
    for pos, lines in files.items():
        (tmp_path / f"data.{pos}").write_text(header + "".join(line + "  \n" for line in lines))
    source = text._debian_wordnet(tmp_path)
    assert source is not None
    assert source("einstein") == ("albert einstein",)
    assert source("albert_einstein") == ("einstein",)
    assert source("galore") == ("abounding",) and source("abounding") == ("galore",)
    assert source("car") == ("a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "auto", "railway car")
    assert source("xyzzy") == source("Einstein") == source("nothing") == ()
    assert text._debian_wordnet(tmp_path / "missing") is None


def test_damaged_wordnet_data_refused(tmp_path: Path) -> None:
    for pos in text._WORDNET_POS:
        (tmp_path / f"data.{pos}").write_text("00001740 03 n zz car 0 auto 0 000 | bad count\n")
    with pytest.raises(ConfigError, match="reinstall"):
        text._debian_wordnet(tmp_path)


def test_missing_wordnet_names_the_install_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text, "_nltk_wordnet", lambda: None)
    monkeypatch.setattr(text, "_DEBIAN_WORDNET", tmp_path)
    with pytest.raises(ConfigError, match=r"nltk\.downloader wordnet.*apt-get install wordnet-base"):
        SynonymReplacement()
    SynonymReplacement(wordnet=TABLE)  # an injected table needs no WordNet


def test_debian_wordnet_synonyms() -> None:
    source = debian_wordnet()
    assert {"glad", "felicitous", "well-chosen"} <= set(source("happy"))
    assert "happy" not in source("happy")
    assert {"automobile", "railway car"} <= set(source("car"))
    assert "galore" in source("abounding")  # adjective marker "(ip)" stripped
    assert "albert einstein" in source("einstein")  # lower-cased, '_' -> ' '
    assert source("dogs") == ()  # exact lemmas: no morphological reduction


def test_nltk_wordnet_synonyms() -> None:
    source = text._nltk_wordnet()
    if source is None:
        pytest.skip("nltk's wordnet data is not installed (python -m nltk.downloader wordnet)")
    assert {"glad", "felicitous", "well-chosen"} <= set(source("happy"))
    assert source("dogs") == ()
    debian = text._debian_wordnet(text._DEBIAN_WORDNET)
    if debian is not None:  # both read WordNet 3.0
        for word in ("happy", "car", "einstein", "abounding"):
            assert source(word) == debian(word)


def test_synonym_replacement_with_wordnet(wordnet: text._WordNet) -> None:
    synonyms = wordnet("happy")
    op = SynonymReplacement(p=1.0)
    for seed in range(10):
        lower, upper, unknown = op(["happy", "Happy!", "xyzzy"], gen(seed))
        assert lower in synonyms
        assert upper[-1] == "!" and upper[0].isupper() and upper[0].lower() + upper[1:-1] in synonyms
        assert unknown == "xyzzy"
    assert len({op(["happy"], gen(seed))[0] for seed in range(30)}) == len(synonyms)
    assert repr(op) == "SynonymReplacement(p=1.0, wordnet=WordNet)"


# ----------------------------------------------------------------------------- Paraphrase


def test_paraphrase_sends_only_the_chosen_sentences() -> None:
    calls: list[list[str]] = []

    def shout(batch: list[str]) -> list[str]:
        calls.append(batch)
        return [s.upper() for s in batch]

    batch = [f"sentence {i}" for i in range(40)]
    out = Paraphrase(shout, p=0.5)(batch, gen())
    changed = [b for b, o in zip(batch, out) if o != b]
    assert calls == [changed] and 0 < len(changed) < len(batch)
    assert all(o in (b, b.upper()) for b, o in zip(batch, out))
    assert Paraphrase(shout)(["a  b"], gen()) == ["A  B"]  # fn's output as is
    calls.clear()
    assert Paraphrase(shout, p=0.0)(batch, gen()) == batch and calls == []  # no call with nothing to send


@pytest.mark.parametrize("fn, message", [
    (lambda batch: batch[:-1], "returned 1 sentences for 2"),
    (lambda batch: "".join(batch), "must return a list of str.*got str"),
    (lambda batch: (s for s in batch), "must return a list of str.*got generator"),
    (lambda batch: [None] * len(batch), "only str, got NoneType at index 0"),
])
def test_paraphrase_output_checked(fn: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Paraphrase(fn)(["a", "b"], gen())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- TextCompose


def test_compose_applies_in_order() -> None:
    a_to_b = SynonymReplacement(p=1.0, wordnet={"a": ["b"]})
    b_to_c = SynonymReplacement(p=1.0, wordnet={"b": ["c"]})
    assert TextCompose([a_to_b, b_to_c])(["a b"], gen()) == ["c c"]
    assert TextCompose([b_to_c, a_to_b])(["a b"], gen()) == ["b c"]
    assert TextCompose([])(["a  b"]) == ["a  b"]


def test_compose_shares_the_generator() -> None:
    steps = [WordDeletion(p=0.2), WordSwap(n=1), RandomMask(p=0.3)]
    g = gen(5)
    expected = LONG_BATCH
    for step in steps:
        expected = step(expected, g)
    assert TextCompose(steps)(LONG_BATCH, gen(5)) == expected


def test_repr() -> None:
    assert repr(TextCompose([WordDeletion(), WordSwap(2), RandomMask(mask_token="<mask>")])) == (
        "TextCompose(WordDeletion(p=0.1), WordSwap(n=2), RandomMask(p=0.15, mask_token='<mask>'))"
    )
    assert repr(SynonymReplacement(wordnet=TABLE)) == "SynonymReplacement(p=0.1, wordnet=table of 3 words)"
    assert repr(Paraphrase(upper, p=0.5)) == "Paraphrase(fn=upper, p=0.5)"


# ----------------------------------------------------------------------------- refused inputs and options


@pytest.mark.parametrize("texts, message", [
    ("a sentence", "got str; wrap a single sentence in a list"),
    (None, "list of str.*got NoneType"),
    (["fine", 3, None], "only str, got int at index 1"),
    ([b"bytes"], "only str, got bytes at index 0"),
])
def test_bad_texts_refused(texts: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        WordDeletion()(texts)  # type: ignore[arg-type]


def test_bad_generator_refused() -> None:
    with pytest.raises(InputError, match=r"torch\.Generator or None, got int"):
        WordSwap()(["a b"], 0)  # type: ignore[arg-type]
    if torch.cuda.is_available():
        with pytest.raises(InputError, match=r"CPU torch\.Generator"):
            WordSwap()(["a b"], torch.Generator(device="cuda"))


@pytest.mark.parametrize("make, message", [
    (lambda: WordDeletion(p=1.5), "p must be a probability"),
    (lambda: WordDeletion(p="0.1"), "p must be a probability"),  # type: ignore[arg-type]
    (lambda: RandomMask(p=-0.1), "p must be a probability"),
    (lambda: SynonymReplacement(p=float("nan"), wordnet=TABLE), "p must be a probability"),
    (lambda: Paraphrase(upper, p=2), "p must be a probability"),
    (lambda: WordSwap(n=-1), "n must be >= 0"),
    (lambda: WordSwap(n=1.5), "n must be >= 0"),  # type: ignore[arg-type]
    (lambda: WordSwap(n=True), "n must be >= 0"),
    (lambda: RandomMask(mask_token=""), "mask_token must be a non-empty str"),
    (lambda: RandomMask(mask_token="[ MASK ]"), "without whitespace"),
    (lambda: RandomMask(mask_token=None), "mask_token must be a non-empty str"),  # type: ignore[arg-type]
    (lambda: Paraphrase("not callable"), "fn must be a callable"),  # type: ignore[arg-type]
    (lambda: TextCompose([WordSwap(), upper]), "TextTransform instances, got function"),  # type: ignore[list-item]
    (lambda: TextCompose(WordSwap()), "list of TextTransform, got WordSwap"),  # type: ignore[arg-type]
])
def test_bad_options_refused(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]
