"""Provenance: which argument values came from untrusted content, or from private records,
seen earlier in the run.

What a tool returns is remembered per run as it is observed:

- outputs of tools marked ``untrusted_output`` (ticket text, emails, web pages) — the whole
  output, or only the listed fields — and outputs of tools marked ``sensitive`` (private
  records) are broken into normalised tokens, and each output field becomes an *origin*
  (tool, action id, field) indexed by its tokens;
- every other output value is trusted: it corroborates the same value seen in untrusted
  text (the customer's address from the CRM clears the same address in the ticket);
- the user's request (the run's ``task``) is trusted too, and also clears sensitive values.

``tag(args)`` then looks each argument's tokens up in the index: an argument is tagged when
it *contains* an untrusted e-mail address, URL, domain, identifier or number, or when its
whole value is made of words of one untrusted field. Tokens are compared after folding
(NFKC, case-folding, invisible characters removed) and, against untrusted text, after a
confusable skeleton (a Cyrillic or Greek "o" and a Latin one are one letter, as are 1 and l);
corroboration by trusted values uses the fold only, so a look-alike is never cleared by
the genuine address. The index is built once per observed output, so tagging costs the
size of the arguments, not of everything the run has read. Rules and limits are described
in docs/policies.md ("Provenance").
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

#: Version of ``snapshot()``; ``restore()`` also reads the unversioned first form.
SNAPSHOT_VERSION: Final = 2
#: A number carries provenance from this many digits (leading zeros and trailing
#: fractional zeros not counted): 100, 4250, 12.5, 0.125 do; 1, 10, 99, 1.5 do not.
MIN_NUMBER_DIGITS: Final = 3
#: An identifier (letters and digits mixed, e.g. ``ab12``, ``inv-4431``) from this length.
MIN_IDENTIFIER_LEN: Final = 4
#: Words shorter than this are ignored on both sides ("to", "an", "ok").
MIN_WORD_LEN: Final = 3
#: A value that is one word is tagged only from this length ("yes" and "the" never are).
MIN_SINGLE_WORD_LEN: Final = 4
#: At most this many origins per argument in ``origins`` (the most recent first); the
#: tools in ``sources`` are always complete.
MAX_ORIGINS_PER_ARG: Final = 8

_UNTRUSTED: Final = "untrusted"
_SENSITIVE: Final = "sensitive"

# Invisible characters that split or disguise a token: soft hyphen, Mongolian vowel
# separator, zero-width space/non-joiner/joiner, LRM/RLM, bidi embeddings and overrides,
# word joiner and invisible operators, BOM.
_INVISIBLE: Final = dict.fromkeys(
    [0x00AD, 0x180E, *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2065), 0xFEFF]
)

# Look-alikes of Latin letters, applied after case-folding (so an uppercase look-alike is
# caught through its lowercase form: Cyrillic capital VE folds to small ve, mapped to "b"). A small
# table of the common ones, not Unicode's full confusables list.
_CONFUSABLES: Final = str.maketrans(
    {
        # Cyrillic
        "\N{CYRILLIC SMALL LETTER A}": "a",
        "\N{CYRILLIC SMALL LETTER VE}": "b",
        "\N{CYRILLIC SMALL LETTER GHE}": "r",
        "\N{CYRILLIC SMALL LETTER IE}": "e",
        "\N{CYRILLIC SMALL LETTER IO}": "e",
        "\N{CYRILLIC SMALL LETTER DZE}": "s",
        "\N{CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I}": "i",
        "\N{CYRILLIC SMALL LETTER YI}": "i",
        "\N{CYRILLIC SMALL LETTER JE}": "j",
        "\N{CYRILLIC SMALL LETTER KA}": "k",
        "\N{CYRILLIC SMALL LETTER EM}": "m",
        "\N{CYRILLIC SMALL LETTER EN}": "h",
        "\N{CYRILLIC SMALL LETTER O}": "o",
        "\N{CYRILLIC SMALL LETTER PE}": "n",
        "\N{CYRILLIC SMALL LETTER ER}": "p",
        "\N{CYRILLIC SMALL LETTER ES}": "c",
        "\N{CYRILLIC SMALL LETTER TE}": "t",
        "\N{CYRILLIC SMALL LETTER U}": "y",
        "\N{CYRILLIC SMALL LETTER HA}": "x",
        "\N{CYRILLIC SMALL LETTER SHHA}": "h",
        "\N{CYRILLIC SMALL LETTER KOMI DE}": "d",
        "\N{CYRILLIC SMALL LETTER QA}": "q",
        "\N{CYRILLIC SMALL LETTER WE}": "w",
        "\N{CYRILLIC SMALL LETTER PALOCHKA}": "l",
        # Greek
        "\N{GREEK SMALL LETTER ALPHA}": "a",
        "\N{GREEK SMALL LETTER BETA}": "b",
        "\N{GREEK SMALL LETTER GAMMA}": "y",
        "\N{GREEK SMALL LETTER EPSILON}": "e",
        "\N{GREEK SMALL LETTER ZETA}": "z",
        "\N{GREEK SMALL LETTER ETA}": "n",
        "\N{GREEK SMALL LETTER IOTA}": "i",
        "\N{GREEK SMALL LETTER KAPPA}": "k",
        "\N{GREEK SMALL LETTER MU}": "u",
        "\N{GREEK SMALL LETTER NU}": "v",
        "\N{GREEK SMALL LETTER OMICRON}": "o",
        "\N{GREEK SMALL LETTER RHO}": "p",
        "\N{GREEK SMALL LETTER TAU}": "t",
        "\N{GREEK SMALL LETTER UPSILON}": "u",
        "\N{GREEK SMALL LETTER CHI}": "x",
        "\N{GREEK SMALL LETTER OMEGA}": "w",
        "\N{GREEK LUNATE SIGMA SYMBOL}": "c",
        "\N{GREEK LETTER YOT}": "j",
        # Armenian and Latin variants
        "\N{ARMENIAN SMALL LETTER OH}": "o",
        "\N{ARMENIAN SMALL LETTER SEH}": "u",
        "\N{LATIN SMALL LETTER DOTLESS I}": "i",
        "\N{LATIN SMALL LETTER SCRIPT G}": "g",
        # digits read as letters
        "0": "o",
        "1": "l",
    }
)

# The look-behind starts a match only where a run starts: linear in the text, not quadratic.
_EMAIL: Final = re.compile(r"(?<![\w.+\-])[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)*\.[^\W\d_]{2,}")
_URL: Final = re.compile(r"(?:[a-z][a-z0-9+.\-]*://|www\.)[^\s<>\"'`]+")
_URL_TRAIL: Final = ".,;:!?)]}'\">*"
_SCHEME: Final = re.compile(r"^[a-z][a-z0-9+.\-]*://")
# Runs of letters and digits, joined by - _ . (a domain, an identifier, a word).
_COMPOUND: Final = re.compile(r"[^\W_]+(?:[-_.][^\W_]+)*")
_JOINERS: Final = re.compile(r"[-_.]")
_NUMBER: Final = re.compile(r"(?<![\w.,])(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?!\w)")
_INDEX_IN_PATH: Final = re.compile(r"\[\d+\]")


def _fold(text: str) -> str:
    """NFKC, invisible characters removed, case-folded."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    return text.casefold()


def _skeleton(token: str) -> str:
    """The look-alike class of a folded token (numbers are keyed apart: see ``_number``)."""
    token = token.translate(_CONFUSABLES)
    if "rn" in token:
        token = token.replace("rn", "m")
    if "vv" in token:
        token = token.replace("vv", "w")
    return token


def _canonical_number(text: str) -> str | None:
    """``"#<number>"`` for a number with enough digits to carry provenance, else None.

    ``1,500.00``, ``1500`` and ``1500.0`` are one number; the sign is ignored.
    """
    whole, _, fraction = text.replace(",", "").lstrip("+-").partition(".")
    whole, fraction = whole.lstrip("0"), fraction.rstrip("0")
    if len((whole + fraction).lstrip("0")) < MIN_NUMBER_DIGITS:
        return None
    return "#" + (whole or "0") + ("." + fraction if fraction else "")


def _number_text(value: int | float | Decimal) -> str | None:
    """A number as plain digits (``1e+20`` written out); None if not finite."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = Decimal(repr(value))
    elif isinstance(value, Decimal) and not value.is_finite():
        return None
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _has_letter_and_digit(token: str) -> bool:
    return any(c.isdigit() for c in token) and any(c.isalpha() for c in token)


def _tokens(text: str) -> tuple[list[str], list[str]]:
    """``(strong, words)`` of a text, folded but not skeletonised.

    Strong tokens are e-mail addresses, URLs (without scheme, ``www.`` and trailing
    punctuation) and their hosts, domain-like names, identifiers and numbers (``#...``); an
    e-mail address's domain is not a token of its own (``gmail.com`` says nothing).
    Words are runs of ``MIN_WORD_LEN``+ letters.
    """
    folded = _fold(text)
    strong: list[str] = []
    words: list[str] = []
    rest = folded
    if "@" in rest:
        strong.extend(m.group().lstrip(".-+") for m in _EMAIL.finditer(rest))
        rest = _EMAIL.sub(" ", rest)
    if "://" in rest or "www." in rest:
        for match in _URL.finditer(rest):
            url = _SCHEME.sub("", match.group().rstrip(_URL_TRAIL))
            url = url.removeprefix("www.").rstrip("/")
            host = url.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
            host = host.rsplit("@", 1)[-1].split(":", 1)[0]
            if url:
                strong.append(url)
            if host and host != url:
                strong.append(host)
        rest = _URL.sub(" ", rest)
    for match in _COMPOUND.finditer(rest):
        token = match.group()
        atoms = [token] if token.isalnum() else _JOINERS.split(token)
        if len(atoms) > 1:
            if "." in token and len(atoms[-1]) >= 2 and atoms[-1].isalpha():
                strong.append(token)  # a domain, a file name
            elif len(token) >= MIN_IDENTIFIER_LEN and _has_letter_and_digit(token):
                strong.append(token)  # an identifier: inv-4431
        for atom in atoms:
            if atom.isalpha():
                if len(atom) >= MIN_WORD_LEN:
                    words.append(atom)
            elif not atom.isdigit() and len(atom) >= MIN_IDENTIFIER_LEN:
                strong.append(atom)  # letters and digits mixed: ab12, de89
    for match in _NUMBER.finditer(rest):
        key = _canonical_number(match.group())
        if key is not None:
            strong.append(key)
    return strong, words


def _loose(token: str) -> str:
    return token if token.startswith("#") else _skeleton(token)


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def _arg_leaves(args: Any) -> Iterator[tuple[str, str, Any]]:
    """``(top-level name, full path, value)`` of every leaf of a call's arguments."""
    if isinstance(args, Mapping):
        for key, value in args.items():
            for path, leaf in _leaves(value, str(key)):
                yield str(key), path, leaf
    else:
        for path, leaf in _leaves(args):
            yield path, path, leaf


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _field_matches(path: str, fields: Sequence[str]) -> bool:
    """Whether an output leaf is under one of ``fields`` (dotted, list indices left out)."""
    bare = _INDEX_IN_PATH.sub("", path).lstrip(".")
    return any(bare == f or bare.startswith(f + ".") for f in fields)


# An origin: (tool, action id, output field, kind, its loose keys joined by spaces).
_Origin = tuple[str, str, str, str, str]


#: How many distinct trusted output values a run remembers (the newest): each is kept
#: raw in the run's state, which every call saves whole (serialised, sealed, written).
#: Measured over HTTP with a tool that returns a new number on every call (the load
#: benchmark's): 703 µs of server CPU a call at 1,024 kept, 582 µs at 256, 535 µs when the
#: values repeat. Forgetting only tags more, never less (see ``_forget_oldest``).
TRUSTED_KEPT = 256


class _Values:
    """Trusted output values in the order seen, and their tokens, computed when asked."""

    __slots__ = ("_done", "_keys", "_seen", "values")

    def __init__(self) -> None:
        self.values: list[str] = []
        self._seen: set[str] = set()
        self._keys: set[str] = set()
        self._done = 0

    def add(self, text: str) -> None:
        if text not in self._seen:
            self._seen.add(text)
            self.values.append(text)
            if len(self.values) > TRUSTED_KEPT:
                self._forget_oldest()

    def _forget_oldest(self) -> None:
        """Keep the newest ``TRUSTED_KEPT * 3 // 4`` values: a run's state (saved whole
        after every call) stays bounded however long the run reads. Forgetting can only
        tag more, never less: a forgotten value no longer vouches for an argument."""
        self.values = self.values[len(self.values) - TRUSTED_KEPT * 3 // 4 :]
        self._seen = set(self.values)
        self._keys, self._done = set(), 0

    def keys(self) -> set[str]:
        """Folded tokens (not skeletonised: a look-alike is not vouched for)."""
        for text in self.values[self._done :]:
            strong, words = _tokens(text)
            self._keys.update(strong, words)
        self._done = len(self.values)
        return self._keys


class ProvenanceTracker:
    """Per-run memory of untrusted, sensitive and trusted tool output, indexed by token."""

    def __init__(self) -> None:
        self._origins: list[_Origin] = []
        # key -> ids of the origins holding it, per kind; built lazily after restore()
        self._index: dict[str, dict[str, list[int]]] | None = {_UNTRUSTED: {}, _SENSITIVE: {}}
        # Trusted output values as seen, kept raw (tokenised only when a hit needs them):
        # public ones, and those of sensitive tools (they vouch against untrusted text,
        # but do not make a private value public).
        self._trusted = _Values()
        self._private = _Values()
        self._request: str = ""
        self._request_keys: set[str] | None = None

    # ------------------------------------------------------------------ observing

    def observe(
        self,
        tool: str,
        output: Any,
        *,
        untrusted: bool | Sequence[str],
        sensitive: bool = False,
        action_id: str = "",
    ) -> None:
        """Remember a tool's output. ``untrusted``: True for the whole output, or the output
        field paths that are untrusted (dotted, without list indices: ``messages.body``);
        the other fields are trusted. ``sensitive``: the output is a private record."""
        fields: Sequence[str] | None
        if isinstance(untrusted, bool):
            fields = None
        else:
            fields = (untrusted,) if isinstance(untrusted, str) else untrusted
        whole = untrusted is True or (
            fields is not None and bool(fields) and not isinstance(output, Mapping | list | tuple)
        )  # a field list over a plain value: the value is untrusted (fail safe)
        for path, leaf in _leaves(output):
            if isinstance(leaf, str):
                if not leaf:
                    continue
                text = leaf
            elif _is_number(leaf) and (number := _number_text(leaf)) is not None:
                text = number
            else:
                continue
            is_untrusted = whole or (fields is not None and _field_matches(path, fields))
            if is_untrusted or sensitive:
                strong, words = _tokens(text)
                keys = " ".join(sorted({_loose(t) for t in {*strong, *words}}))
                if keys:
                    if is_untrusted:
                        self._add_origin((tool, action_id, path, _UNTRUSTED, keys))
                    if sensitive:
                        self._add_origin((tool, action_id, path, _SENSITIVE, keys))
            if not is_untrusted:
                (self._private if sensitive else self._trusted).add(text)

    def observe_trusted_request(self, text: str) -> None:
        """The user's own request (the run's task): values in it are not tagged. Not part
        of the snapshot: the run keeps its task."""
        if text != self._request:
            self._request, self._request_keys = text, None

    def _add_origin(self, origin: _Origin) -> None:
        oid = len(self._origins)
        self._origins.append(origin)
        if self._index is not None:
            index = self._index[origin[3]]
            for key in origin[4].split():
                index.setdefault(key, []).append(oid)

    def _ensure_index(self) -> dict[str, dict[str, list[int]]]:
        if self._index is None:
            index: dict[str, dict[str, list[int]]] = {_UNTRUSTED: {}, _SENSITIVE: {}}
            for oid, origin in enumerate(self._origins):
                by_key = index[origin[3]]
                for key in origin[4].split():
                    by_key.setdefault(key, []).append(oid)
            self._index = index
        return self._index

    def _requested(self) -> set[str]:
        if self._request_keys is None:
            strong, words = _tokens(self._request)
            self._request_keys = {*strong, *words}
        return self._request_keys

    # ------------------------------------------------------------------ tagging

    def tag(self, args: Any) -> dict[str, Any]:
        """The ``provenance`` value rules see (shape in docs/policies.md)::

        {"untrusted_args": [top-level names and full paths],
         "sources": {path: [tool, ...]},
         "origins": {path: [{"tool", "action_id", "field"}, ...]},
         "sensitive_args": [...], "sensitive_sources": {...}, "sensitive_origins": {...}}
        """
        if not self._origins:
            return _CLEAN
        index = self._ensure_index()
        untrusted_index, sensitive_index = index[_UNTRUSTED], index[_SENSITIVE]
        untrusted: dict[str, tuple[str, set[int]]] = {}
        sensitive: dict[str, tuple[str, set[int]]] = {}
        for top, path, leaf in _arg_leaves(args):
            if isinstance(leaf, str):
                if len(leaf) < MIN_WORD_LEN:
                    continue
                strong, words = _tokens(leaf)
            elif _is_number(leaf):
                text = _number_text(leaf)
                key = None if text is None else _canonical_number(text)
                if key is None:
                    continue
                strong, words = [key], []
            else:
                continue
            if untrusted_index:
                hits = self._hits(strong, words, untrusted_index, sensitive=False)
                if hits:
                    untrusted[path] = (top, hits)
            if sensitive_index:
                hits = self._hits(strong, words, sensitive_index, sensitive=True)
                if hits:
                    sensitive[path] = (top, hits)
        if not untrusted and not sensitive:
            return _CLEAN
        args_u, sources_u, origins_u = self._report(untrusted)
        args_s, sources_s, origins_s = self._report(sensitive)
        return {
            "untrusted_args": args_u,
            "sources": sources_u,
            "origins": origins_u,
            "sensitive_args": args_s,
            "sensitive_sources": sources_s,
            "sensitive_origins": origins_s,
        }

    def _hits(
        self,
        strong: list[str],
        words: list[str],
        index: dict[str, list[int]],
        *,
        sensitive: bool,
    ) -> set[int]:
        """Origins an argument's value came from, less what a trusted source vouches for
        (for sensitive values, a source that is not itself sensitive)."""
        found: set[int] = set()
        for token in strong:
            oids = index.get(_loose(token))
            if oids and not self._cleared(token, sensitive=sensitive):
                found.update(oids)
        if words and (len(words) > 1 or len(words[0]) >= MIN_SINGLE_WORD_LEN):
            # The whole value made of one field's tokens: all its words, and its addresses,
            # numbers and identifiers too (a subject "Re: invoice INV-4711" is not taken
            # from a text that says "invoice" and "INV-" elsewhere).
            tokens = [*words, *strong]
            lists = []
            for key in dict.fromkeys(map(_loose, tokens)):
                oids = index.get(key)
                if not oids:
                    break
                lists.append(oids)
            else:
                lists.sort(key=len)
                common = set(lists[0])
                for oids in lists[1:]:
                    common.intersection_update(oids)
                    if not common:
                        break
                if common and not all(self._cleared(t, sensitive=sensitive) for t in tokens):
                    found.update(common)
        return found

    def _cleared(self, token: str, *, sensitive: bool) -> bool:
        if token in self._requested() or token in self._trusted.keys():
            return True
        return not sensitive and token in self._private.keys()

    def _report(
        self, hits: dict[str, tuple[str, set[int]]]
    ) -> tuple[list[str], dict[str, list[str]], dict[str, list[dict[str, str]]]]:
        names: set[str] = set()
        sources: dict[str, list[str]] = {}
        origins: dict[str, list[dict[str, str]]] = {}
        for path, (top, oids) in sorted(hits.items()):
            names.update((top, path))
            sources[path] = sorted({self._origins[o][0] for o in oids})
            origins[path] = [
                {"tool": tool, "action_id": action_id, "field": field}
                for tool, action_id, field, _, _ in (
                    self._origins[o] for o in sorted(oids, reverse=True)[:MAX_ORIGINS_PER_ARG]
                )
            ]
        return sorted(names), sources, origins

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """What the run stores between calls: the observed origins with their keys, and the
        trusted values; linear in what the run has read."""
        return {
            "version": SNAPSHOT_VERSION,
            "origins": [list(o) for o in self._origins],
            "trusted": list(self._trusted.values),
            "private": list(self._private.values),
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> ProvenanceTracker:
        """A tracker from ``snapshot()``, or from the first, unversioned form (untrusted
        texts kept whole: ``{"untrusted": [[tool, text]], "trusted": [value]}``), which
        is indexed again here."""
        tracker = cls()
        version = data.get("version")
        if version is None:
            for tool, text in data.get("untrusted", []):
                tracker.observe(str(tool), str(text), untrusted=True)
        elif version == SNAPSHOT_VERSION:
            tracker._origins = [
                (str(t), str(a), str(f), str(k), str(keys))
                for t, a, f, k, keys in data.get("origins", [])
            ]
            tracker._index = None  # built on the first tag()
        else:
            raise ValueError(
                f"provenance snapshot version {version!r} is not known to this Warden "
                f"(it reads {SNAPSHOT_VERSION} and the unversioned form): upgrade Warden"
            )
        for value in data.get("trusted", []):
            tracker._trusted.add(str(value))
        for value in data.get("private", []):
            tracker._private.add(str(value))
        return tracker

    @classmethod
    def merge_snapshots(cls, a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        """The union of two snapshots of one run (two calls that overlapped), in either
        form; the origins of ``a`` first."""
        first, second = cls._current(a), cls._current(b)
        origins = [list(o) for o in first.get("origins", [])]
        seen = {tuple(o) for o in origins}
        for origin in second.get("origins", []):
            if tuple(origin) not in seen:
                seen.add(tuple(origin))
                origins.append(list(origin))
        return {
            "version": SNAPSHOT_VERSION,
            "origins": origins,
            "trusted": list(dict.fromkeys([*first.get("trusted", []), *second.get("trusted", [])])),
            "private": list(dict.fromkeys([*first.get("private", []), *second.get("private", [])])),
        }

    @classmethod
    def _current(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        if data.get("version") == SNAPSHOT_VERSION:
            return data
        return cls.restore(data).snapshot()


_CLEAN: dict[str, Any] = {
    "untrusted_args": [],
    "sources": {},
    "origins": {},
    "sensitive_args": [],
    "sensitive_sources": {},
    "sensitive_origins": {},
}
