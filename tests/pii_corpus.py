"""A labelled synthetic PII corpus (seeded ``faker``), shared by tests/test_pii_detect.py
and benchmarks/bench_pii.py.

Each sample is a sentence holding one value of a kind in one of its written formats, or a
hard negative (order ids, timestamps, version numbers, UUIDs, prices, tracking numbers,
ISBNs, dates, hashes) that holds none. ``score`` runs a detector over the corpus and
counts, per kind, found values that are labelled (true positives), found values that are
not (false positives) and labelled values not found (false negatives).
"""

from __future__ import annotations

import base64
import ipaddress
import random
import string
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from faker import Faker

KINDS = ("email", "phone", "card", "iban", "ssn", "ipv4", "ipv6", "credential")

Sample = tuple[str, list[tuple[str, str]]]

_TEMPLATES = (
    "{v}",
    "Please contact me at {v} about order ORD-2024-{n}.",
    "customer record: {v}; tier pro",
    "From the ticket: \"my details are {v}, thanks\"",
    "{v} (updated {d})",
    "Refund $42.10 for order #{n} — details: {v}.",
    "note={v}",
    "<td>{v}</td>",
)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _alnum(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _emails(fake: Faker, rng: random.Random) -> str:
    form = rng.randrange(6)
    if form == 0:
        return str(fake.email())
    if form == 1:
        return str(fake.free_email())
    if form == 2:
        return str(fake.company_email()).upper()
    if form == 3:
        user = fake.user_name()
        return f"{user}+{fake.word()}@mail.{fake.domain_name()}"
    if form == 4:
        return f"{fake.first_name().lower()}.{fake.last_name().lower()}@{fake.domain_word()}.co.uk"
    return f"{fake.user_name()}_{rng.randrange(100)}@{fake.domain_name(2)}"


def _phones(fake: Faker, rng: random.Random) -> str:
    area = f"{rng.randint(2, 9)}{_digits(rng, 2)}"
    ex = f"{rng.randint(2, 9)}{_digits(rng, 2)}"
    line = _digits(rng, 4)
    form = rng.randrange(13)
    return [
        f"({area}) {ex}-{line}",
        f"{area}-{ex}-{line}",
        f"{area}.{ex}.{line}",
        f"{area} {ex} {line}",
        f"+1 {area} {ex} {line}",
        f"+1-{area}-{ex}-{line}",
        f"+1{area}{ex}{line}",
        f"1-{area}-{ex}-{line}",
        f"{area}-{ex}-{line} x{_digits(rng, 3)}",
        f"+44 20 {_digits(rng, 4)} {_digits(rng, 4)}",
        f"+49 30 {_digits(rng, 8)}",
        f"+33 {rng.randint(1, 9)} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)}",
        f"0044 20 {_digits(rng, 4)} {_digits(rng, 4)}",
    ][form]


def _cards(fake: Faker, rng: random.Random) -> str:
    brand = rng.choice(["visa16", "mastercard", "amex", "discover", "jcb16", "diners"])
    number = str(fake.credit_card_number(card_type=brand))
    form = rng.randrange(3)
    if form == 0:
        return number
    sep = " " if form == 1 else "-"
    if len(number) == 15:  # American Express: 4-6-5
        return sep.join((number[:4], number[4:10], number[10:]))
    if len(number) == 14:  # Diners Club: 4-6-4
        return sep.join((number[:4], number[4:10], number[10:]))
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


_IBAN_LOCALES = ("de_DE", "en_GB", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_PT")


def _ibans(fakes: dict[str, Faker], rng: random.Random) -> str:
    iban = str(fakes[rng.choice(_IBAN_LOCALES)].iban())
    if rng.random() < 0.5:
        return iban
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def _ssns(fake: Faker, rng: random.Random) -> tuple[str, str]:
    """(text, value): the labelled value is the number, its label is context."""
    ssn = str(fake.ssn())
    form = rng.randrange(3)
    if form == 0:
        return ssn, ssn
    if form == 1:
        spaced = ssn.replace("-", " ")
        return spaced, spaced
    bare = ssn.replace("-", "")
    return f"SSN: {bare}", bare


def _ipv4(fake: Faker, rng: random.Random) -> str:
    return str(fake.ipv4_private() if rng.random() < 0.5 else fake.ipv4_public())


def _ipv6(fake: Faker, rng: random.Random) -> str:
    address = ipaddress.IPv6Address(fake.ipv6())
    form = rng.randrange(3)
    if form == 0:
        return str(address)  # compressed
    if form == 1:
        return address.exploded
    return f"fe80::{_alnum(rng, 4, '0123456789abcdef')}:{_alnum(rng, 4, '0123456789abcdef')}"


def _credentials(rng: random.Random) -> tuple[str, str]:
    b64 = string.ascii_letters + string.digits + "-_"
    form = rng.randrange(10)
    if form == 0:
        v = "sk-" + _alnum(rng, 48)
        return v, v
    if form == 1:
        v = "sk-proj-" + _alnum(rng, 40, b64)
        return v, v
    if form == 2:
        v = "sk_live_" + _alnum(rng, 24)
        return v, v
    if form == 3:
        v = "ghp_" + _alnum(rng, 36)
        return v, v
    if form == 4:
        v = "AKIA" + _alnum(rng, 16, string.ascii_uppercase + string.digits)
        return v, v
    if form == 5:
        v = "xoxb-" + "-".join(_digits(rng, 12) for _ in range(2)) + "-" + _alnum(rng, 24)
        return v, v
    if form == 6:

        def part(n: int) -> str:
            return base64.urlsafe_b64encode(bytes(rng.randrange(256) for _ in range(n))).decode().rstrip("=")

        head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
        claims = base64.urlsafe_b64encode(b'{"sub":"' + _digits(rng, 10).encode() + b'"}').decode().rstrip("=")
        v = f"{head}.{claims}.{part(32)}"
        return v, v
    if form == 7:
        v = _alnum(rng, 12, string.ascii_letters + string.digits + "!#%")
        return f"password={v}", v
    if form == 8:
        v = _alnum(rng, 40, b64)
        return f"Authorization: Bearer {v}", v
    v = _alnum(rng, 32)
    return f"api_key: {v}", v


def _negatives(fake: Faker, rng: random.Random) -> str:
    form = rng.randrange(22)
    return [
        f"order ORD-{rng.randint(2019, 2026)}-{_digits(rng, 6)}",
        f"order #{_digits(rng, 6)} shipped",
        f"at {fake.date_time_this_decade().isoformat()}Z",
        f"created {fake.date_time_this_decade().strftime('%Y-%m-%d %H:%M:%S')}",
        f"epoch {rng.randint(1_500_000_000, 1_800_000_000)}",
        f"ts_ms {rng.randint(1_500_000_000_000, 1_800_000_000_000)}",
        f"version v{rng.randint(0, 20)}.{rng.randint(0, 40)}.{rng.randint(0, 99)}",
        f"Python 3.{rng.randint(8, 13)}.{rng.randint(0, 15)}, "
        f"build 10.0.{rng.randint(10000, 30000)}.{rng.randint(1000, 5000)}",
        f"request id {uuid.UUID(int=rng.getrandbits(128))}",
        f"total ${rng.randint(1, 99)},{_digits(rng, 3)}.{_digits(rng, 2)}",
        f"EUR {rng.randint(1, 99)}.{_digits(rng, 3)},{_digits(rng, 2)} due",
        f"UPS 1Z{_alnum(rng, 6, string.ascii_uppercase + string.digits)}{_digits(rng, 10)}",
        "USPS 9400 " + " ".join(_digits(rng, 4) for _ in range(4)) + f" {_digits(rng, 2)}",
        f"FedEx {_digits(rng, 4)} {_digits(rng, 4)} {_digits(rng, 4)}",
        f"ISBN 978-{rng.randint(0, 9)}-{_digits(rng, 2)}-{_digits(rng, 6)}-{rng.randint(0, 9)}",
        f"due {rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(2000, 2030)}",
        f"commit {_alnum(rng, 40, '0123456789abcdef')}",
        f"zip {_digits(rng, 5)}-{_digits(rng, 4)}",
        f"amazon order 1{_digits(rng, 2)}-{_digits(rng, 7)}-{_digits(rng, 7)}",
        f"customer cus_{_digits(rng, 4)} refunded {rng.randint(1, 500)}.{_digits(rng, 2)} USD",
        f"invoice INV-{_digits(rng, 4)} for {rng.randint(2, 40)} items, ref {_digits(rng, 8)}",
        f"time {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} "
        f"at table {rng.randint(1, 99)}",
    ][form]


def corpus(seed: int = 7, per_kind: int = 200, negatives: int = 1000) -> list[Sample]:
    """``per_kind`` samples of each kind (formats chosen at random) and ``negatives`` hard
    negatives, in a seeded random order."""
    Faker.seed(seed)
    rng = random.Random(seed)
    fake = Faker("en_US")
    fakes = {loc: Faker(loc) for loc in _IBAN_LOCALES}
    samples: list[Sample] = []

    def embed(text: str, labels: list[tuple[str, str]]) -> Sample:
        template = rng.choice(_TEMPLATES)
        return template.format(v=text, n=_digits(rng, 6), d=fake.date()), labels

    for _ in range(per_kind):
        v = _emails(fake, rng)
        samples.append(embed(v, [("email", v)]))
        v = _phones(fake, rng)
        samples.append(embed(v, [("phone", v)]))
        v = _cards(fake, rng)
        samples.append(embed(v, [("card", v)]))
        v = _ibans(fakes, rng)
        samples.append(embed(v, [("iban", v)]))
        text, v = _ssns(fake, rng)
        samples.append(embed(text, [("ssn", v)]))
        v = _ipv4(fake, rng)
        samples.append(embed(v, [("ipv4", v)]))
        v = _ipv6(fake, rng)
        samples.append(embed(v, [("ipv6", v)]))
        text, v = _credentials(rng)
        samples.append(embed(text, [("credential", v)]))
    samples.extend((_negatives(fake, rng), []) for _ in range(negatives))
    rng.shuffle(samples)
    return samples


@dataclass
class KindScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)
    false_hits: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


Finder = Callable[[str], Iterable[tuple[str, int, int]]]


def score(samples: list[Sample], find: Finder) -> dict[str, KindScore]:
    """Per kind: a found span counts as a true positive when its text is a labelled
    value of that kind in the sample (exactly)."""
    scores = {kind: KindScore() for kind in KINDS}
    for text, labels in samples:
        wanted = list(labels)
        for kind, start, end in find(text):
            found = text[start:end]
            if (kind, found) in wanted:
                wanted.remove((kind, found))
                scores[kind].tp += 1
            else:
                scores[kind].fp += 1
                scores[kind].false_hits.append(f"{found!r} in {text!r}")
        for kind, value in wanted:
            scores[kind].fn += 1
            scores[kind].misses.append(f"{value!r} in {text!r}")
    return scores
