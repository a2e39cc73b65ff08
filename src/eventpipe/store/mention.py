"""Where a dead letter names a user: the condition an erasure deletes letters by, and its parameters.

In a JSON payload: a whole JSON string that decodes to the id, or, for an id
that is an integer's text, that integer as the value of a "user_id" key (the
key spelt in any way JSON allows), also spelt with a fraction or an exponent
(4242.0, 4.242e3: the parser refuses those as user ids, but a producer whose
encoder writes doubles sends its user's letters so); so `alice`
does not take the letters of `alice.smith` or `alice@example.com`, nor
`913297552` a letter whose amount is 913297552. A payload that is no JSON has
no such structure: there the id goes as a JSON string that decodes to it (as in
JSON, any escape), or as a whole word (not preceded or followed by an id's
characters) in any of its usual spellings, erring on the side of erasing: two
RE2 passes, linear in the payload (one pattern of both was 5 to 10 times slower,
as ClickHouse then finds no substring to look for first). toValidUTF8 first: the
regular expression engine reads UTF-8, and an invalid byte beside the id would
hide it. Every value is a bound parameter: one user's (`mentions`), each user's of
a set under their own number (`numbered`), or a set's as arrays (`of_each`,
which store.letter reads a set's letters with).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

_ALTERNATIVES = "arrayStringConcat(arrayMap(s -> regexpQuoteMeta(s), {spellings:Array(String)}), '|')"
_AS_STRING = "match(payload, {json_string:String})"
_AS_NUMBER = "({user_number:String} != '' AND match(payload, {user_number:String}))"
# Compared as doubles: beyond 2^53 a neighbour's fraction or exponent spelling matches too, erring on
# the side of erasing (such a letter's user_id was refused as no integer, so it names no other user).
# NaN for an id that is no integer, which equals nothing. The pattern, `fraction`, is every user's: extractAll
# takes no other than a constant, and a set's users are matched in one statement (store.letter).
_AS_FRACTION = (
    "(NOT isNaN({user_float:Float64}) AND"
    " arrayExists(x -> toFloat64OrNull(x) = {user_float:Float64}, extractAll(payload, {fraction:String})))"
)
_AS_WORD = "match(toValidUTF8(payload), concat('(^|[^0-9A-Za-z_-])(', " + _ALTERNATIVES + ", ')($|[^0-9A-Za-z_-])'))"
# Text isValidJSON refuses is often a producer's JSON all the same (a number beyond a double, a raw tab in
# a string, cut at the size limit): the word's spellings are Python's escapes, so Gson's \u003d kept it.
_AS_STRING_IN_TEXT = "match(toValidUTF8(payload), {json_string:String})"
_IN_JSON = " OR ".join((_AS_STRING, _AS_NUMBER, _AS_FRACTION))
MENTIONS = "if(isValidJSON(payload), " + _IN_JSON + ", " + _AS_STRING_IN_TEXT + " OR " + _AS_WORD + ")"

# The colon after a key, with the white space JSON allows around it.
_COLON = "[ \\t\\r\\n]*:[ \\t\\r\\n]*"

# JSON's two-character escapes (RFC 8259, 7), beside \uXXXX, which any character may take.
_SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Of those, the characters a string never holds as themselves (`/` may be either).
_ESCAPED_ONLY = frozenset(_SHORT) - {"/"}


def spellings(user_id: str) -> list[str]:
    """How text may hold `user_id`: as is, and escaped as JSON encoders write it (some escape `/`)."""
    ascii_only = json.dumps(user_id)[1:-1]
    # Some encoders write \u escapes in upper-case hex (\u00E9).
    upper = re.sub(r"\\u([0-9a-f]{4})", lambda hex_digits: "\\u" + hex_digits.group(1).upper(), ascii_only)
    escaped = (json.dumps(user_id, ensure_ascii=False)[1:-1], ascii_only, upper)
    return list(dict.fromkeys((user_id, *escaped, *(e.replace("/", "\\/") for e in escaped))))


def json_string(user_id: str) -> str:
    """An RE2 pattern for a JSON string literal that decodes to `user_id`, each character written as
    itself or escaped in any way JSON allows. Listing encoders' spellings missed some: Gson writes
    `=`, `'`, `<`, `>` and `&` as \\u003d and the like, and an id ending in `=` is common."""
    return '"' + "".join(_character(ch) for ch in user_id) + '"'


def _character(ch: str) -> str:
    options = [] if ch in _ESCAPED_ONLY else [_literal(ch)]
    if ch in _SHORT:
        options.append(_literal(_SHORT[ch]))
    options.append("".join(_unit(unit) for unit in _utf16(ch)))
    return "(?:" + "|".join(options) + ")"


def _literal(text: str) -> str:
    # RE2 reads \x{HH} as the character, so no punctuation is ever taken for syntax.
    return "".join(ch if ch.isalnum() or ord(ch) > 0x7F else f"\\x{{{ord(ch):02x}}}" for ch in text)


def _unit(unit: int) -> str:
    """\\uXXXX for one UTF-16 code unit, its hex digits in either case."""
    digits = "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{unit:04x}")
    return "\\x{5c}u" + digits


def _utf16(ch: str) -> list[int]:
    """The UTF-16 code units of `ch`: one, or a surrogate pair beyond the first plane."""
    encoded = ch.encode("utf-16-be")
    return [int.from_bytes(encoded[i : i + 2], "big") for i in range(0, len(encoded), 2)]


_INTEGER = r"-?[1-9][0-9]*|0"
# A "user_id" key, spelt in any way JSON allows, and its colon.
_USER_ID_KEY = json_string("user_id") + _COLON


def user_number(user_id: str) -> str:
    """An RE2 pattern for a "user_id" key, spelt in any way JSON allows, whose value is the integer the
    parser reads as `user_id` ("0" is also -0); '' when `user_id` is no integer's text. The key's
    escapes count: `user\\u005fid` is the key the parser reads, and a replay stored the letter."""
    if not re.fullmatch(_INTEGER, user_id):
        return ""
    number = "-?0" if user_id == "0" else _literal(user_id)
    return _USER_ID_KEY + number + "(?:[^0-9.eE]|$)"


# An RE2 pattern whose one group is the value of a "user_id" key written with a fraction or an exponent.
FRACTION = _USER_ID_KEY + "(-?[0-9]+(?:[.][0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+))"


def user_float(user_id: str) -> float:
    """The double `user_id` is, as FRACTION's values are compared with it; NaN when it is no integer's text
    or no double."""
    if not re.fullmatch(_INTEGER, user_id):
        return math.nan
    try:
        return float(int(user_id))
    except OverflowError:
        return math.nan


def mentions(user_id: str, index: int | None = None) -> dict[str, object]:
    """The parameters of MENTIONS for `user_id`; with `index`, named as `numbered(MENTIONS, index)` reads them."""
    found = {
        "spellings": spellings(user_id),
        "json_string": json_string(user_id),
        "user_number": user_number(user_id),
        "user_float": user_float(user_id),
        "fraction": FRACTION,
    }
    if index is None:
        return found
    return {f"{name}_{index}" if name in OWN else name: value for name, value in found.items()}


def numbered_mentions(user_ids: Sequence[str]) -> dict[str, object]:
    """The parameters of MENTIONS for each of `user_ids`, named for its place (`mentions(user_id, place)`): what an
    erasure of the set hides, and what its reads of one user's letters (`numbered`) and store.letter read."""
    return {name: value for place, user_id in enumerate(user_ids) for name, value in mentions(user_id, place).items()}


# MENTIONS' parameters of each user; `fraction` is every user's, held once for a set (1,000 copies of it for a
# set of 1,000 users before).
OWN = sorted(set(re.findall(r"\{(\w+):", MENTIONS)) - {"fraction"})
# Each user's, named once per user where one statement's values hold several users'.
_NAMED = re.compile(r"\{(" + "|".join(OWN) + "):")


def numbered(sql: str, index: int) -> str:
    """`sql` reading MENTIONS' parameters of the `index`th user of a set (`mentions(user_id, index)`): an
    erasure of a set hides every user's patterns under one token (store.concealment), one name per value. A
    token per user took 1,000 synced inserts and 1,000 partitions to drop for a restore's set."""
    return _NAMED.sub(lambda found: "{" + found.group(1) + f"_{index}:", sql)


# Each user's own values in MENTIONS, with their types.
_OWN = re.compile(r"\{(" + "|".join(OWN) + r"):([^{}]+)\}")


def of_each(sql: str) -> str:
    """`sql` reading MENTIONS' parameters of the `i`th user of a set (a lambda's `i`, from 1), each from an
    array of every user's values (`mentions_of`): one statement tells which of a set's users a letter names."""
    return _OWN.sub(lambda found: "{" + found.group(1) + "_all:Array(" + found.group(2) + ")}[i]", sql)


def mentions_of(each: Sequence[dict[str, object]]) -> dict[str, object]:
    """The parameters of `of_each(MENTIONS)` for the users whose `mentions` are `each`, in their order; `fraction`,
    every user's, is not among them."""
    return {f"{name}_all": [one[name] for one in each] for name in OWN}
