"""CEL source text to syntax tree, with Lark's LALR parser and an inline tree builder.

The builder runs as Lark's parse callbacks (no intermediate parse tree), which keeps
parsing iterative however deeply an expression nests. Lark's errors are turned into
``CelSyntaxError`` with 1-based line and column within the source.
"""

from __future__ import annotations

import functools
from typing import Any, cast

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from warden.errors import CelSyntaxError
from warden.policy.cel._ast import (
    Binary,
    Call,
    Conditional,
    Expr,
    Ident,
    Index,
    ListExpr,
    Literal,
    MapExpr,
    Pos,
    Select,
    Unary,
)
from warden.policy.cel._grammar import GRAMMAR
from warden.policy.cel._literals import LiteralError, parse_int, parse_string, parse_uint
from warden.policy.cel._values import INT_MAX, INT_MIN

RESERVED = frozenset(
    {
        "as", "break", "const", "continue", "else", "for", "function", "if", "import",
        "let", "loop", "package", "namespace", "return", "var", "void", "while",
    }
)  # fmt: skip

# Magnitude of the one int literal that is only valid when negated: -9223372036854775808.
_INT_MIN_MAGNITUDE = INT_MAX + 1

_TOKEN_NAMES = {
    "$END": "end of expression",
    "IDENT": "identifier",
    "STRING_LIT": "string",
    "INT_LIT": "number",
    "UINT_LIT": "number",
    "FLOAT_LIT": "number",
}


def _pos(token: Token) -> Pos:
    return (token.line or 1, token.column or 1)


def _syntax_error(message: str, token: Token, offset: int = 0) -> CelSyntaxError:
    line, column = _pos(token)
    # Offsets inside a token only ever point at its first line (escapes cannot span lines
    # except in triple-quoted strings, where we keep the token's own position).
    text = str(token)
    if "\n" not in text[:offset]:
        column += offset
    return CelSyntaxError(message, line, column)


class _Builder(Transformer[Token, Expr]):
    """Parse callbacks building ``_ast`` nodes; stateless, so one instance is shared."""

    def conditional(self, children: list[Any]) -> Expr:
        condition, then, otherwise = children
        return Conditional(condition.pos, condition, then, otherwise)

    def or_op(self, children: list[Any]) -> Expr:
        return Binary(children[0].pos, "||", children[0], children[1])

    def and_op(self, children: list[Any]) -> Expr:
        return Binary(children[0].pos, "&&", children[0], children[1])

    def binary(self, children: list[Any]) -> Expr:
        left, op, right = children
        return Binary(_pos(op), str(op), left, right)

    def not_op(self, children: list[Any]) -> Expr:
        *bangs, last = children
        operand: Expr = last
        # Like cel-go, an even run of ! cancels out at parse time.
        if len(bangs) % 2 == 0:
            return operand
        return Unary(_pos(bangs[0]), "!", operand)

    def neg_op(self, children: list[Any]) -> Expr:
        *minuses, last = children
        operand: Expr = last
        if len(minuses) % 2 == 0:
            return operand
        pos = _pos(minuses[0])
        if (
            isinstance(operand, Literal)
            and type(operand.value) in (int, float)
            and operand.value != INT_MIN
        ):
            # A negative literal, which is how -9223372036854775808 becomes expressible.
            # -(-9223372036854775808) stays an operation, failing with overflow when run.
            return Literal(pos, -operand.value)
        return Unary(pos, "-", operand)

    def select(self, children: list[Any]) -> Expr:
        operand, field = children
        return Select(_pos(field), operand, str(field))

    def method_call(self, children: list[Any]) -> Expr:
        target, name, args = children
        return Call(_pos(name), str(name), target, tuple(args or ()))

    def index(self, children: list[Any]) -> Expr:
        operand, bracket, key = children
        return Index(_pos(bracket), operand, key)

    def ident(self, children: list[Any]) -> Expr:
        name = children[-1]
        self._check_reserved(name)
        return Ident(_pos(children[0]), str(name))

    def call(self, children: list[Any]) -> Expr:
        *head, args = children
        name = head[-1]
        self._check_reserved(name)
        return Call(_pos(head[0]), str(name), None, tuple(args or ()))

    def paren(self, children: list[Any]) -> Expr:
        inner: Expr = children[0]
        _reject_int_overflow(inner)
        return inner

    def list_lit(self, children: list[Any]) -> Expr:
        bracket, elements = children
        return ListExpr(_pos(bracket), tuple(elements or ()))

    def map_lit(self, children: list[Any]) -> Expr:
        brace, entries = children
        return MapExpr(_pos(brace), tuple(entries or ()))

    def args(self, children: list[Any]) -> list[Any]:
        return children

    def elements(self, children: list[Any]) -> list[Any]:
        return children

    def entries(self, children: list[Any]) -> list[Any]:
        return children

    def entry(self, children: list[Any]) -> tuple[Any, Any]:
        return (children[0], children[1])

    def int_lit(self, children: list[Token]) -> Expr:
        (token,) = children
        value = parse_int(str(token))
        if value > _INT_MIN_MAGNITUDE:
            raise _syntax_error("int literal out of range", token)
        return Literal(_pos(token), value)

    def uint_lit(self, children: list[Token]) -> Expr:
        (token,) = children
        try:
            return Literal(_pos(token), parse_uint(str(token)))
        except LiteralError as error:
            raise _syntax_error(str(error), token) from None

    def float_lit(self, children: list[Token]) -> Expr:
        (token,) = children
        value = float(str(token))
        if value == float("inf"):
            raise _syntax_error("double literal out of range", token)
        return Literal(_pos(token), value)

    def string_lit(self, children: list[Token]) -> Expr:
        (token,) = children
        try:
            return Literal(_pos(token), parse_string(str(token)))
        except LiteralError as error:
            raise _syntax_error(str(error), token, error.offset) from None

    def true_lit(self, children: list[Token]) -> Expr:
        return Literal(_pos(children[0]), True)

    def false_lit(self, children: list[Token]) -> Expr:
        return Literal(_pos(children[0]), False)

    def null_lit(self, children: list[Token]) -> Expr:
        return Literal(_pos(children[0]), None)

    @staticmethod
    def _check_reserved(name: Token) -> None:
        if str(name) in RESERVED:
            raise _syntax_error(f"reserved identifier: {name}", name)


def _reject_int_overflow(node: Expr) -> None:
    """9223372036854775808 is only valid right after a unary minus (not even parenthesised);
    the builder checks parenthesised literals, the checker every other literal."""
    if isinstance(node, Literal) and type(node.value) is int and node.value > INT_MAX:
        line, column = node.pos
        raise CelSyntaxError("int literal out of range", line, column)


@functools.cache
def _parser() -> Lark:
    return Lark(
        GRAMMAR,
        parser="lalr",
        lexer="basic",
        transformer=_Builder(),
        maybe_placeholders=True,
    )


def parse(source: str) -> Expr:
    """Parse ``source``; raises ``CelSyntaxError`` for anything that is not valid CEL."""
    try:
        tree = cast(Expr, _parser().parse(source))
    except UnexpectedInput as error:
        raise _convert(error, source) from None
    return tree


check_int_literal = _reject_int_overflow


def _end_position(source: str) -> Pos:
    line = source.count("\n") + 1
    column = len(source) - (source.rfind("\n") + 1) + 1
    return (line, column)


def _convert(error: UnexpectedInput, source: str) -> CelSyntaxError:
    if isinstance(error, UnexpectedCharacters):
        offset = error.pos_in_stream
        char = source[offset] if offset is not None and offset < len(source) else ""
        if char in "'\"":
            message = "unterminated or malformed string literal"
        else:
            message = f"unexpected character {char!r}"
        return CelSyntaxError(message, error.line, error.column)
    if isinstance(error, UnexpectedToken) and error.token.type != "$END":
        token = error.token
        what = _TOKEN_NAMES.get(token.type, "token")
        return CelSyntaxError(f"unexpected {what} {str(token)!r}", *_pos(token))
    if isinstance(error, UnexpectedToken | UnexpectedEOF):
        line, column = _end_position(source)
        message = "empty expression" if not source.strip() else "unexpected end of expression"
        return CelSyntaxError(message, line, column)
    return CelSyntaxError(str(error), error.line or 1, error.column or 1)
