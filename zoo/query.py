"""A model filter that cannot run code: ``select(models, expr, where)`` keeps the rows of a models table that
``expr`` selects, like ``DataFrame.query`` on the same expression, but ``expr`` is parsed with ``ast`` and only
a small grammar over the table's columns is evaluated (``DataFrame.query`` evaluates Python, so a filter read
back from a run's config could call anything).

The grammar: column names; number, string, bool and None constants; lists or tuples of constants; comparisons
(``== != < <= > >=``, chained too; ``in`` / ``not in`` a list, and ``==`` / ``!=`` a list as pandas reads them);
``and`` / ``or`` / ``not`` and pandas' ``&`` / ``|`` / ``~`` (``&`` and ``|`` bind like ``and`` and ``or``, as
in pandas); parentheses; unary minus; ``+ - * /``. Comparisons follow pandas: one with NaN is False (``!=``
True). Anything else is a one-line ``ZooError`` naming what is not allowed and where the filter came from.
"""

from __future__ import annotations

import ast
import io
import operator
import tokenize
from collections.abc import Callable
from typing import Any

import pandas as pd

from zoo.errors import ZooError

_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.Invert,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.List,
    ast.Tuple,
)

_NAMES: dict[type, str] = {
    ast.Call: "calls",
    ast.Attribute: "attributes",
    ast.Subscript: "subscripts",
    ast.Slice: "slices",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignments",
    ast.IfExp: "if-else expressions",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.JoinedStr: "f-strings",
    ast.Starred: "starred expressions",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Is: "'is'",
    ast.IsNot: "'is not'",
    ast.Pow: "'**'",
    ast.Mod: "'%'",
    ast.FloorDiv: "'//'",
    ast.MatMult: "'@'",
    ast.BitXor: "'^'",
    ast.LShift: "'<<'",
    ast.RShift: "'>>'",
}

_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_CONSTANTS = (bool, int, float, str, type(None))


class _Refused(Exception):
    """What is not allowed in a filter (the message completes 'bad <where> <expr>: ...')."""


def select(models: pd.DataFrame, expr: str, where: str) -> pd.DataFrame:
    """The rows of ``models`` that the filter ``expr`` (from ``where``, e.g. "generator.query") selects."""
    return models.loc[mask(models, expr, where)]


def mask(models: pd.DataFrame, expr: str, where: str) -> pd.Series:
    """The boolean row mask of the filter ``expr`` over ``models``; a ``ZooError`` for anything not allowed."""
    if not isinstance(expr, str):
        raise ZooError(f"bad {where} {expr!r}: a filter is a string, got {type(expr).__name__}")
    try:
        tree = ast.parse(_preparse(expr), mode="eval")
    except _Refused as e:
        raise ZooError(f"bad {where} {expr!r}: {e}") from None
    except (RecursionError, MemoryError):
        raise ZooError(f"bad {where} {expr!r}: too deeply nested") from None
    except (SyntaxError, tokenize.TokenError, ValueError) as e:
        msg = e.msg if isinstance(e, SyntaxError) else str(e.args[0] if e.args else e)
        raise ZooError(f"bad {where} {expr!r}: syntax error ({' '.join(str(msg).split())})") from None
    try:
        _check(tree, models)
        result = _eval(tree.body, models)
    except _Refused as e:
        raise ZooError(f"bad {where} {expr!r}: {e}") from None
    except RecursionError:
        raise ZooError(f"bad {where} {expr!r}: too deeply nested") from None
    except (TypeError, ValueError, ArithmeticError) as e:  # e.g. a string column compared with a number
        raise ZooError(f"bad {where} {expr!r}: {' '.join(str(e).split())}") from None
    if not (isinstance(result, pd.Series) and pd.api.types.is_bool_dtype(result.dtype)):
        raise ZooError(f'bad {where} {expr!r}: not a condition on the models\' columns (e.g. "width >= 16")')
    return result


def _preparse(expr: str) -> str:
    """``expr`` with pandas' ``&`` / ``|`` read as ``and`` / ``or`` (their precedence in ``DataFrame.query``)."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(expr).readline):
        if tok.type == tokenize.OP and tok.string == "@":
            raise _Refused("'@' (local variables) not allowed: a filter sees only the models' columns")
        if tok.type == tokenize.OP and tok.string in ("&", "|"):
            out.append((tokenize.NAME, "and" if tok.string == "&" else "or"))
        else:
            out.append((tok.type, tok.string))
    return tokenize.untokenize(out)


def _check(tree: ast.AST, models: pd.DataFrame) -> None:
    """Refuse every node outside the grammar, and names that are not columns."""
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise _Refused(f"{_NAMES.get(type(node), type(node).__name__)} not allowed in a filter")
        if isinstance(node, ast.Name):
            if node.id.startswith("__") and node.id.endswith("__"):
                raise _Refused(f"dunder name {node.id!r} not allowed in a filter")
            if node.id not in models.columns:
                raise _Refused(f"{node.id!r} is not a column (columns: {', '.join(map(str, models.columns))})")
        if isinstance(node, ast.Constant) and not isinstance(node.value, _CONSTANTS):
            raise _Refused(f"constant {node.value!r} not allowed in a filter")


def _eval(node: ast.expr, models: pd.DataFrame) -> Any:
    """The value of a checked node: a column (Series) or a constant."""
    if isinstance(node, ast.Name):
        return models[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        raise _Refused("a list only after 'in', 'not in', '==' or '!='")
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, models)
        if isinstance(node.op, ast.USub):
            return -v
        if isinstance(node.op, ast.UAdd):
            return +v
        return ~_condition(v, "'not'/'~'") if isinstance(v, pd.Series) else not _condition(v, "'not'/'~'")
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, models), _eval(node.right, models)
        if isinstance(node.op, (ast.Mult, ast.Div)) and not (_is_number(left) and _is_number(right)):
            raise _Refused("'*' and '/' take numbers")  # 'x' * 10**9 would fill the memory
        return _ARITH[type(node.op)](left, right)
    if isinstance(node, ast.BoolOp):
        values = [_condition(_eval(v, models), "'and'/'or'") for v in node.values]
        out = values[0]
        for v in values[1:]:
            out = (out & v) if isinstance(node.op, ast.And) else (out | v)
        return out
    assert isinstance(node, ast.Compare)  # _check let nothing else through
    left, out = _eval(node.left, models), None
    for op, right_node in zip(node.ops, node.comparators):
        if isinstance(right_node, (ast.List, ast.Tuple)) and isinstance(op, (ast.In, ast.NotIn, ast.Eq, ast.NotEq)):
            if not isinstance(left, pd.Series):
                raise _Refused("the left of 'in' must be a column")
            hit = left.isin(_constants(right_node))
            part = ~hit if isinstance(op, (ast.NotIn, ast.NotEq)) else hit
            right = None
        elif isinstance(op, (ast.In, ast.NotIn)):
            raise _Refused("'in' and 'not in' take a list of constants, e.g. \"arch in ['mlp', 'cnn']\"")
        else:
            right = _eval(right_node, models)
            part = _COMPARE[type(op)](left, right)
        out = part if out is None else out & part
        left = right
    return out


def _constants(node: ast.List | ast.Tuple) -> list:
    """The constants of a list or tuple node (negative numbers included)."""
    values = []
    for e in node.elts:
        if isinstance(e, ast.Constant):
            values.append(e.value)
        elif (
            isinstance(e, ast.UnaryOp)
            and isinstance(e.op, (ast.USub, ast.UAdd))
            and isinstance(e.operand, ast.Constant)
            and isinstance(v := e.operand.value, (int, float))
        ):
            values.append(-v if isinstance(e.op, ast.USub) else v)
        else:
            raise _Refused("a list in a filter holds only constants")
    return values


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a number or a numeric column (bools included)."""
    if isinstance(value, pd.Series):
        return pd.api.types.is_numeric_dtype(value.dtype)
    return isinstance(value, (int, float))


def _condition(value: Any, what: str) -> Any:
    """``value`` if it is a condition (a boolean column or a bool), else refuse it as an operand of ``what``."""
    if isinstance(value, bool) or (isinstance(value, pd.Series) and pd.api.types.is_bool_dtype(value.dtype)):
        return value
    raise _Refused(f'{what} take conditions (e.g. "width >= 16"), not values')
