"""The CEL grammar, in Lark's EBNF, for an LALR(1) parser with Lark's basic lexer.

It follows the grammar in the CEL language definition (cel-spec ``doc/langdef.md``),
without message construction (``M{f: v}``), which needs protobuf types we do not have.

The basic lexer is deliberate: Lark's contextual lexer would lex ``a index`` as
``a in dex``, because in that parser state only ``in`` is acceptable after ``a``. The
basic lexer matches identifiers first and turns exact keyword matches into keywords.
Terminal priorities settle the remaining overlaps: a string with a ``b``/``r`` prefix
must beat an identifier, a float must beat an int (``1.5``, ``1e3``), a uint must beat an
int (``1u``).
"""

GRAMMAR = r"""
?start: expr

?expr: or_expr
     | or_expr "?" or_expr ":" expr          -> conditional

?or_expr: and_expr
        | or_expr "||" and_expr              -> or_op

?and_expr: relation
         | and_expr "&&" relation            -> and_op

?relation: addition
         | relation (EQ | NE | LT | LE | GT | GE | IN) addition   -> binary

?addition: multiplication
         | addition (PLUS | MINUS) multiplication                 -> binary

?multiplication: unary
               | multiplication (STAR | SLASH | PERCENT) unary    -> binary

?unary: member
      | BANG+ member                         -> not_op
      | MINUS+ member                        -> neg_op

?member: primary
       | member "." IDENT                    -> select
       | member "." IDENT "(" [args] ")"     -> method_call
       | member LSQB expr "]"                -> index

?primary: DOT? IDENT                         -> ident
        | DOT? IDENT "(" [args] ")"          -> call
        | "(" expr ")"                       -> paren
        | LSQB [elements] "]"                -> list_lit
        | LBRACE [entries] "}"               -> map_lit
        | INT_LIT                            -> int_lit
        | UINT_LIT                           -> uint_lit
        | FLOAT_LIT                          -> float_lit
        | STRING_LIT                         -> string_lit
        | TRUE                               -> true_lit
        | FALSE                              -> false_lit
        | NULL                               -> null_lit

args: expr ("," expr)*
// List and map literals, unlike calls, accept a trailing comma.
elements: expr ("," expr)* ","?
entries: entry ("," entry)* ","?
entry: expr ":" expr

EQ: "=="
NE: "!="
LE: "<="
GE: ">="
LT: "<"
GT: ">"
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
PERCENT: "%"
BANG: "!"
DOT: "."
LSQB: "["
LBRACE: "{"

IN: "in"
TRUE: "true"
FALSE: "false"
NULL: "null"
IDENT: /[_a-zA-Z][_a-zA-Z0-9]*/

FLOAT_LIT.3: /[0-9]*\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+/
UINT_LIT.2: /(?:0x[0-9a-fA-F]+|[0-9]+)[uU]/
INT_LIT.1: /0x[0-9a-fA-F]+|[0-9]+/

// A string or bytes literal: an optional b prefix, then either a raw string (r prefix),
// whose backslashes are literal, or a cooked one, where a backslash escapes any
// character and the decoder rejects escapes CEL does not define. Triple quotes come
// first so that three quotes are not read as an empty string. Lark inlines the parts.
STRING_LIT.4: /[bB]?/ (RAW_STRING | COOKED_STRING)
RAW_STRING: /[rR]/ (RAW_TRIPLE | RAW_SINGLE)
RAW_TRIPLE: /'''(?:(?!''')(?s:.))*'''|\"\"\"(?:(?!\"\"\")(?s:.))*\"\"\"/
RAW_SINGLE: /'[^'\r\n]*'|\"[^\"\r\n]*\"/
COOKED_STRING: COOKED_TRIPLE | COOKED_SINGLE
COOKED_TRIPLE: /'''(?:\\(?s:.)|(?!''')[^\\])*'''|\"\"\"(?:\\(?s:.)|(?!\"\"\")[^\\])*\"\"\"/
COOKED_SINGLE: /'(?:\\.|[^'\\\r\n])*'|\"(?:\\.|[^\"\\\r\n])*\"/

COMMENT: /\/\/[^\r\n]*/
WHITESPACE: /[\t\n\f\r ]+/
%ignore COMMENT
%ignore WHITESPACE
"""
