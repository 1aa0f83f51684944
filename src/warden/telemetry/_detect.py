"""PII detectors: where personal data sits inside a string.

Each kind is found from a cheap anchor, never by trying every pattern at every position
(measured: eight patterns that each open with a look-behind cost ~680 µs on 2 KB of
text; anchored, the same text costs ~10 µs):

- e-mail addresses from each ``@`` (``str.find``), expanded left and right;
- runs of digits and separators (one ASCII character-class scan) are classified as a
  payment card (13-19 digits, a known issuer prefix, Luhn, one kind of separator), a US
  SSN (``123-45-6789``, or nine digits after "SSN"), an IPv4 address, or a phone number
  (a phone's shape: digit count, groups, not a date or a time); an IBAN is checked where
  such a run follows two capital letters (the country's length, then mod-97);
- IPv6 addresses from ``:hex:`` (only in strings with two colons), parsed by
  ``ipaddress``;
- credentials from the prefixes of well-known keys and tokens, long unbroken tokens
  (JWTs), private key blocks, ``Bearer ...`` and ``password=...`` pairs (the label stays,
  the value goes).

Strings shorter than ``MIN_SCAN_LEN`` are not scanned. Precision and recall per kind are
measured on a labelled synthetic corpus by ``benchmarks/bench_pii.py`` (docs/pii.md).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final, Literal

PiiKind = Literal["email", "phone", "card", "iban", "ssn", "ipv4", "ipv6", "credential"]
KINDS: Final[tuple[PiiKind, ...]] = (
    "email",
    "phone",
    "card",
    "iban",
    "ssn",
    "ipv4",
    "ipv6",
    "credential",
)

#: Nothing shorter is scanned: the shortest thing found is an IPv4 address (``1.2.3.4``).
MIN_SCAN_LEN: Final = 7

# IBAN length per country (the SWIFT IBAN registry).
IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

_A = re.ASCII  # \d and \w in ASCII only: 3x faster to scan than their Unicode forms

# -- e-mail
_LOCAL_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-"
)
_DOMAIN: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9_-])", _A
)

# -- runs of digits: one scan, classified after
# Starting on a character class lets the engine skip ahead in C; at least 7 characters
# One scan finds both runs of digits and IBANs. The look-behinds come after the first
# character, so they run only where a digit (or + or () is, not at every position:
# - ``iban``: a digit after two capitals (``DE89 3704...``, ``GB82WEST1234...``);
# - a run of digits and separators, not glued to a word (``ord_00042``, ``T10:22:30``)
#   nor to a word and a joiner (``ORD-2024-...``, ``v1.2.3``).
_NUMERIC: Final = re.compile(
    r"[+(0-9](?:(?P<iban>(?<=[A-Z][A-Z][0-9])[0-9])"
    r"|(?<![A-Za-z0-9_][+(0-9])(?<![A-Za-z0-9_][-.:/+][+(0-9])[0-9 ().:/-]{5,}[0-9]\)?)",
    _A,
)
_EXT: Final = re.compile(r"\s?(?:x|ext\.?)\s?[0-9]{1,5}(?![\w])", _A)
_IPV4: Final = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                          r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])", _A)  # fmt: skip
_SSN: Final = re.compile(r"(?!000|666|9)[0-9]{3}([- ])(?!00)[0-9]{2}\1(?!0000)[0-9]{4}", _A)
_SSN_BARE: Final = re.compile(r"(?!000|666|9)[0-9]{3}(?!00)[0-9]{2}(?!0000)[0-9]{4}", _A)
_SSN_LABEL: Final = re.compile(r"(?i)\bssn\s*(?:[:#]|no\.?)?\s*\Z")
_IBAN_AT: Final = re.compile(r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}", _A)
_NOT_DIGIT: Final = re.compile(r"[^0-9]")
_GROUPS: Final = re.compile(r"[ ().-]+")
_BOUNDARY: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_JOINERS: Final = frozenset("-.:/+")

# -- IPv6
_V6_ANCHOR: Final = re.compile(r":[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:", _A)
_HEX_COLON: Final = frozenset("0123456789abcdefABCDEF:")
_V6_RIGHT: Final = re.compile(r"[0-9A-Fa-f:.]{1,45}", _A)

# -- credentials: each hint is a literal, found by a fast scan; the patterns run after
# Each pattern opens with a literal, so the engine finds it with a fast scan, and runs only
# when its literal is in the text at all.
_CRED_PATTERNS: Final = tuple(
    (hint, re.compile(pattern + r"(?![\w-])", _A))
    for hint, pattern in (
        ("sk-", r"sk-(?:ant-(?:api\d\d-)?|proj-)?[A-Za-z0-9_-]{20,}"),
        ("k_", r"[srp]k_(?:live|test)_[A-Za-z0-9]{16,}"),
        ("gh", r"gh[pousr]_[A-Za-z0-9]{36,}"),
        ("github_pat_", r"github_pat_[A-Za-z0-9_]{40,}"),
        ("xox", r"xox[abposr]-[A-Za-z0-9-]{10,}"),
        ("AKIA", r"AKIA[0-9A-Z]{16}"),
        ("ASIA", r"ASIA[0-9A-Z]{16}"),
        ("AIza", r"AIza[0-9A-Za-z_-]{35}"),
        ("eyJ", r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    )
)
_PEM: Final = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[^\x00]*?-----END [A-Z ]*PRIVATE KEY-----"
)
#: labels whose value is a secret (``password=...``, ``api_key: ...``, ``Bearer ...``),
#: found in the lowercased text, then matched from there (a bare ``key:`` or ``token:``
#: is not one: ``key:slack-bridge`` names a key, it is not one)
_CRED_LABELS: Final = (
    "password", "passwd", "pwd", "secret", "client_secret", "api_key", "api-key", "apikey",
    "access_key", "access_token", "auth_token", "refresh_token", "private_key", "bearer",
)  # fmt: skip
#: every label holds one of these: six scans decide whether the fourteen are needed
_CRED_LABEL_HINTS: Final = ("pass", "pwd", "secret", "key", "token", "bearer")
_CRED_PAIR: Final = re.compile(
    r"(?:bearer\s+|[a-z_-]+\s*[:=]\s*)(?P<v>[^\s,;&\"'<>\x00]{6,})", _A
)
_LABEL_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")

Span = tuple[PiiKind, int, int]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _issuer_ok(digits: str) -> bool:
    n = len(digits)
    two, three, four = int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16  # Mastercard
    if two in (34, 37):
        return n == 15  # American Express
    if four == 6011 or two == 65 or 644 <= three <= 649:
        return 16 <= n <= 19  # Discover
    if two == 35:
        return 16 <= n <= 19  # JCB (3528-3589 issued; the whole 35 range is checked)
    if two in (36, 38, 39) or 300 <= three <= 305:
        return 14 <= n <= 19  # Diners Club
    if two == 62:
        return 16 <= n <= 19  # UnionPay
    return False


def iban_ok(compact: str) -> bool:
    """``compact``: an IBAN without spaces, in capitals."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    moved = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in moved))
    except ValueError:
        return False
    return number % 97 == 1


def _iban_at(text: str, start: int) -> int:
    """The end of an IBAN starting at ``start`` (0: none). The pattern may run on into a
    code in capitals that follows; the country's length says where the IBAN stops."""
    m = _IBAN_AT.match(text, start)
    if m is None:
        return 0
    expected = IBAN_LENGTHS.get(text[start : start + 2])
    if expected is None:
        return 0
    seen = 0
    for end in range(start, m.end()):
        if text[end] != " ":
            seen += 1
            if seen == expected:
                after = end + 1
                if after < len(text) and text[after] in _BOUNDARY:
                    return 0
                return after if iban_ok(text[start:after].replace(" ", "")) else 0
    return 0


def _phone(core: str, has_ext: bool) -> bool:
    digits = _NOT_DIGIT.sub("", core)
    n = len(digits)
    opens = core.count("(")
    if opens != core.count(")") or opens > 1 or ":" in core or "/" in core:
        return False
    groups = [g for g in _GROUPS.split(core.lstrip("+")) if g]
    if core.startswith("+"):
        # E.164: a country code, at most 15 digits, grouped or not
        return 8 <= n <= 15 and len(groups[-1]) >= 2
    if core.startswith("00"):
        # 00 and a country code (never 0): the international prefix outside North America
        blocks = all(len(g) == 4 for g in groups)  # 0075 2445 9698: a number in blocks
        return core[2:3] not in ("0", "") and 11 <= n <= 15 and len(groups) >= 3 and not blocks
    if not 10 <= n <= 11 or (len(groups) == 1 and not has_ext):
        # an unbroken run of 10 digits is an order number or a timestamp as often as a
        # phone: only grouped numbers (or ones with an extension) count
        return False
    if len(groups[-1]) != 4 or any(len(g) > 4 for g in groups):
        return False
    if n == 11 and groups[0] != "1":
        return False  # 11 digits: only the North American 1 in front
    # 2024-03-15 10 and the like read as digit groups but are dates
    return not (len(groups[0]) == 4 and groups[0][:2] in ("19", "20"))


def _classify(text: str, start: int, end: int) -> Span | None:
    """The kind of the run of digits ``text[start:end]``, if it is PII."""
    value = text[start:end]
    if value[0] == "(" and ")" not in value:
        start, value = start + 1, value[1:]
    if value[-1] == ")" and "(" not in value:
        end, value = end - 1, value[:-1]
    if ":" in value:
        return None
    digits = _NOT_DIGIT.sub("", value)
    n = len(digits)
    if n < 4:
        return None
    if "." in value and _IPV4.fullmatch(value):
        return "ipv4", start, end
    if 13 <= n <= 19 and len({c for c in value if not c.isdigit()}) <= 1:
        if _issuer_ok(digits) and luhn_ok(digits):
            return "card", start, end
    if n == 9:
        if _SSN.fullmatch(value):
            return "ssn", start, end
        if _SSN_BARE.fullmatch(value) and _SSN_LABEL.search(text, max(0, start - 12), start):
            return "ssn", start, end
    ext = _EXT.match(text, end)
    if _phone(value, ext is not None):
        return "phone", start, end if ext is None else ext.end()
    return None


def _numeric(text: str, out: list[Span]) -> None:
    length = len(text)
    pos = 0
    while True:
        m = _NUMERIC.search(text, pos)
        if m is None:
            return
        start, end = m.span()
        pos = end
        if m.start("iban") != -1:
            at = start - 2
            if (at == 0 or text[at - 1] not in _BOUNDARY) and text[at : at + 2] in IBAN_LENGTHS:
                iban_end = _iban_at(text, at)
                if iban_end:
                    out.append(("iban", at, iban_end))
                    pos = iban_end
            continue
        if text[start] == "+" and not text[start + 1].isdigit():
            continue
        after = text[end] if end < length else " "
        if after in _BOUNDARY and after not in "xe":
            continue
        if after in _JOINERS and end + 1 < length and text[end + 1] in _BOUNDARY:
            continue
        found = _classify(text, start, end)
        if found is None and " " in text[start:end] and not _one_number(text[start:end]):
            found = _split(text, start, end)
        if found is not None:
            out.append(found)


def _one_number(value: str) -> bool:
    """Four or more groups of four digits: one long number written in blocks (a tracking
    or an account number), never split into pieces."""
    groups = value.split(" ")
    return len(groups) >= 4 and all(len(g) == 4 and g.isdigit() for g in groups[:-1])


def _split(text: str, start: int, end: int) -> Span | None:
    """A run of digits that is no PII whole may begin or end with one, set off by a
    space (``call 555-123-4567 2 times``, ``10:30 555-123-4567``): the longest such
    piece. Pieces from the middle of a long run are not tried: that is a tracking or an
    account number, not a phone inside one."""
    spaces = [i for i in range(start, end) if text[i] == " "]
    pieces = [(start, i) for i in reversed(spaces)] + [(i + 1, end) for i in spaces]
    pieces.sort(key=lambda p: p[0] - p[1])
    for a, b in pieces:
        while a < b and text[a] == " ":
            a += 1
        while b > a and text[b - 1] == " ":
            b -= 1
        if b - a >= MIN_SCAN_LEN:
            found = _classify(text, a, b)
            if found is not None:
                return found
    return None


def _emails(text: str, out: list[Span]) -> None:
    at = text.find("@")
    while at != -1:
        start = at
        floor = max(0, at - 64)
        while start > floor and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        # the local part starts with a letter or digit (".bob@x" is "bob@x")
        while start < at and text[start] in "._%+-":
            start += 1
        right = _DOMAIN.match(text, at + 1) if start < at else None
        if right is not None:
            out.append(("email", start, right.end()))
            at = text.find("@", right.end())
        else:
            at = text.find("@", at + 1)


def _ipv6(text: str, out: list[Span]) -> None:
    # an address has "::" or three groups between colons; a time (10:22:30) has neither
    anchors: list[int] = []
    at = text.find("::")
    while at != -1:
        anchors.append(at)
        at = text.find("::", at + 2)
    anchors.extend(m.start() for m in _V6_ANCHOR.finditer(text))
    done = -1
    for anchor in sorted(anchors):
        if anchor < done:
            continue
        start = anchor
        floor = max(0, start - 40)
        while start > floor and text[start - 1] in _HEX_COLON:
            start -= 1
        right = _V6_RIGHT.match(text, anchor)
        end = right.end() if right is not None else anchor + 2
        while end > start and text[end - 1] == ".":
            end -= 1
        done = end
        value = text[start:end]
        colons = value.count(":")
        # eight groups, or fewer around "::" (MAC addresses are neither)
        if "::" not in value and not (colons == 7 or (colons == 6 and "." in value)):
            continue
        if (start and text[start - 1] in _BOUNDARY) or (end < len(text) and text[end] in _BOUNDARY):
            continue
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        out.append(("ipv6", start, end))


def _credentials(text: str, out: list[Span]) -> None:
    for hint, pattern in _CRED_PATTERNS:
        if hint in text:
            for m in pattern.finditer(text):
                at = m.start()
                if at == 0 or (text[at - 1] not in _BOUNDARY and text[at - 1] != "-"):
                    out.append(("credential", at, m.end()))
    if "-----BEGIN" in text:
        out.extend(("credential", m.start(), m.end()) for m in _PEM.finditer(text))
    low = text.lower()
    if len(low) != len(text):
        return  # a character whose lowercase is longer: offsets would not line up
    if not any(hint in low for hint in _CRED_LABEL_HINTS):
        return
    for label in _CRED_LABELS:
        at = low.find(label)
        while at != -1:
            # the label starts a word or follows api_/access_ (not "monkey=...")
            if at == 0 or low[at - 1] not in _LABEL_CHARS:
                pair = _CRED_PAIR.match(low, at)
                if pair is not None:
                    end = pair.end("v")
                    while text[end - 1] in ".,)":  # the sentence's, not the secret's
                        end -= 1
                    if end - pair.start("v") >= 6:
                        out.append(("credential", pair.start("v"), end))
            at = low.find(label, at + len(label))


def find(text: str) -> list[Span]:
    """``(kind, start, end)`` of each piece of PII in ``text``, left to right, without
    overlaps (where two kinds overlap, the earlier and then the longer one wins)."""
    if len(text) < MIN_SCAN_LEN:
        return []
    spans: list[Span] = []
    if "@" in text:
        _emails(text, spans)
    _credentials(text, spans)
    if text.count(":") >= 2:
        _ipv6(text, spans)
    _numeric(text, spans)
    if len(spans) < 2:
        return spans
    spans.sort(key=lambda s: (s[1], s[1] - s[2]))
    kept = [spans[0]]
    for span in spans[1:]:
        if span[1] >= kept[-1][2]:
            kept.append(span)
    return kept


__all__ = ["IBAN_LENGTHS", "KINDS", "MIN_SCAN_LEN", "PiiKind", "Span", "find", "iban_ok", "luhn_ok"]
