"""Input formats of the DSL task: realistic strings (names, dates, emails, codes, ...),
each with a full distribution and a narrow one.

The full generator draws the inputs a problem is judged on (held-out inputs, and
the visible ones in the "discriminating" and "random" modes). The narrow
generator is the FlashFill situation: the user shows a few easy examples that
happen to be simpler than the data the program will run on. Each narrow
distribution is chosen so that programs of the same depth that the full
distribution tells apart coincide on it:

* fewer parts: two-word phrases, snake and kebab names (2-3 words in full),
  two-word full names (three in full): ``split(x," ",1)`` and ``split(x," ",-1)``
  agree, as do ``initials`` of the first two words and of all;
* equal lengths: 4-letter first names, 5-letter last names, 4-letter words,
  3-letter extensions, one-digit days: a position and a separator pick the same
  piece, e.g. ``take(x,4)`` and ``split(x," ",0)`` on "john smith", ``drop(x,-5)``
  and ``split(x," ",-1)``;
* a coincidence: month = day in dates, minutes = seconds in times, a repeated
  phone group, a code's check letter equal to its first letter: two fields or
  indices give the same output.

All narrow distributions but "full name" (two words instead of three) are
sub-distributions of their format's full one. Every generator is deterministic
given the ``random.Random`` it is passed; the full generators draw exactly as
they did before narrow ones existed, so existing splits are unchanged.
"""

from __future__ import annotations

import random
from typing import Callable, NamedTuple

FIRST = ["john", "mary", "ana", "li", "omar", "sara", "peter", "kate", "raj", "emma",
         "noah", "yuki", "ivan", "lena", "tom", "zoe", "carlos", "fatima", "ben", "nina"]
LAST = ["smith", "lee", "garcia", "chen", "khan", "brown", "novak", "silva", "ito",
        "muller", "jones", "diaz", "kim", "patel", "moreau", "olsen", "o'neil"]
WORDS = ["red", "blue", "fast", "data", "apple", "river", "green", "cloud", "stone",
         "light", "north", "paper", "music", "gold", "quiet", "table", "small", "open"]
DOMAINS = ["acme.com", "mail.org", "uni.edu", "shop.io", "web.net", "corp.co.uk"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
EXTS = ["pdf", "txt", "png", "csv", "py", "jpg"]
UPPER = "ABCDEFGHJKLMNPRSTUVWXYZ"

# the equal-length subsets the narrow generators draw from
FIRST4 = [w for w in FIRST if len(w) == 4]
LAST5 = [w for w in LAST if len(w) == 5]
WORDS4 = [w for w in WORDS if len(w) == 4]
EXTS3 = [e for e in EXTS if len(e) == 3]

Gen = Callable[[random.Random], str]


class InputFormat(NamedTuple):
    name: str
    full: Gen  # the distribution held-out inputs come from
    narrow: Gen  # the simpler one visible inputs come from in the "narrow" mode
    seps: list[str]  # separators the format contains (what split/replace use)
    strip_chars: list[str]  # characters worth stripping from its ends


def _cap(w: str) -> str:
    return w[:1].upper() + w[1:]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _words(rng: random.Random, lo: int, hi: int, vocab: list[str] = WORDS) -> list[str]:
    return rng.sample(vocab, rng.randint(lo, hi))


def _same_twice(rng: random.Random, lo: int, hi: int) -> tuple[int, int]:
    n = rng.randint(lo, hi)
    return n, n


FORMATS = [
    InputFormat("name", lambda r: f"{r.choice(FIRST)} {r.choice(LAST)}",
                lambda r: f"{r.choice(FIRST4)} {r.choice(LAST5)}", [" "], []),
    InputFormat("Name", lambda r: f"{_cap(r.choice(FIRST))} {_cap(r.choice(LAST))}",
                lambda r: f"{_cap(r.choice(FIRST4))} {_cap(r.choice(LAST5))}", [" "], []),
    InputFormat("Last, First", lambda r: f"{_cap(r.choice(LAST))}, {_cap(r.choice(FIRST))}",
                lambda r: f"{_cap(r.choice(LAST5))}, {_cap(r.choice(FIRST4))}", [", ", " ", ","], [","]),
    InputFormat("full name", lambda r: f"{r.choice(FIRST)} {r.choice(FIRST)} {r.choice(LAST)}",
                lambda r: f"{r.choice(FIRST4)} {r.choice(LAST5)}", [" "], []),
    InputFormat("iso date", lambda r: f"20{_digits(r, 2)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
                lambda r: "20{}-{:02d}-{:02d}".format(_digits(r, 2), *_same_twice(r, 1, 12)), ["-"], ["0"]),
    InputFormat("eu date", lambda r: f"{r.randint(1, 28):02d}/{r.randint(1, 12):02d}/19{_digits(r, 2)}",
                lambda r: "{:02d}/{:02d}/19{}".format(*_same_twice(r, 1, 12), _digits(r, 2)), ["/"], ["0"]),
    InputFormat("us date", lambda r: f"{r.choice(MONTHS)} {r.randint(1, 28)}, 20{_digits(r, 2)}",
                lambda r: f"{r.choice(MONTHS)} {r.randint(1, 9)}, 20{_digits(r, 2)}", [" ", ", ", ","], [","]),
    InputFormat("email", lambda r: f"{r.choice(FIRST)}.{r.choice(LAST)}@{r.choice(DOMAINS)}",
                lambda r: f"{r.choice(FIRST4)}.{r.choice(LAST5)}@{r.choice(DOMAINS)}", ["@", "."], []),
    InputFormat("short email", lambda r: f"{r.choice(FIRST)[0]}{r.choice(LAST)}@{r.choice(DOMAINS)}",
                lambda r: f"{r.choice(FIRST)[0]}{r.choice(LAST5)}@{r.choice(DOMAINS)}", ["@", "."], []),
    InputFormat("code", lambda r: f"{r.choice(UPPER)}{r.choice(UPPER)}-{_digits(r, 4)}-{r.choice(UPPER)}",
                lambda r: "{0}{1}-{2}-{0}".format(r.choice(UPPER), r.choice(UPPER), _digits(r, 4)),
                ["-"], ["0"]),
    InputFormat("sku", lambda r: f"SKU_{_digits(r, 4)}_{r.choice(WORDS).upper()}",
                lambda r: f"SKU_{_digits(r, 4)}_{r.choice(WORDS4).upper()}", ["_"], ["0"]),
    InputFormat("id", lambda r: f"#{'0' * r.randint(1, 3)}{r.randint(1, 9999)}",
                lambda r: f"#0{r.randint(100, 999)}", [], ["#", "0", "#0"]),
    InputFormat("phrase", lambda r: " ".join(_words(r, 2, 4)), lambda r: " ".join(_words(r, 2, 2, WORDS4)), [" "], []),
    InputFormat("snake", lambda r: "_".join(_words(r, 2, 3)), lambda r: "_".join(_words(r, 2, 2, WORDS4)), ["_"], ["_"]),
    InputFormat("kebab", lambda r: "-".join(_cap(w) for w in _words(r, 2, 3)),
                lambda r: "-".join(_cap(w) for w in _words(r, 2, 2, WORDS4)), ["-"], []),
    InputFormat("file", lambda r: f"{r.choice(WORDS)}_v{r.randint(1, 9)}.{r.choice(EXTS)}",
                lambda r: f"{r.choice(WORDS4)}_v{r.randint(1, 9)}.{r.choice(EXTS3)}", ["_", "."], []),
    InputFormat("path", lambda r: f"{r.choice(WORDS)}/{r.choice(WORDS)}.{r.choice(EXTS)}",
                lambda r: f"{r.choice(WORDS4)}/{r.choice(WORDS4)}.{r.choice(EXTS3)}", ["/", "."], []),
    InputFormat("time", lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}",
                lambda r: "{:02d}:{:02d}:{:02d}".format(r.randint(0, 23), *_same_twice(r, 0, 59)), [":"], ["0"]),
    InputFormat("phone", lambda r: f"{_digits(r, 3)}-{_digits(r, 3)}-{_digits(r, 4)}",
                lambda r: "{0}-{0}-{1}".format(_digits(r, 3), _digits(r, 4)), ["-"], []),
    InputFormat("url", lambda r: f"www.{r.choice(WORDS)}.{r.choice(['com', 'org', 'io', 'net'])}",
                lambda r: f"www.{r.choice(WORDS4)}.{r.choice(['com', 'org', 'io', 'net'])}", ["."], ["w"]),
]


def draw_inputs(rng: random.Random, gen: Gen, n: int, max_chars: int) -> list[str]:
    """Up to ``n`` distinct inputs of at most ``max_chars`` chars (4n draws at most)."""
    pool: list[str] = []
    for _ in range(4 * n):
        x = gen(rng)
        if x not in pool and len(x) <= max_chars:
            pool.append(x)
        if len(pool) == n:
            break
    return pool
