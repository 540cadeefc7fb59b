"""Finds the operations of a migration that contract the schema: drop or rename a table or a column, or make a
column NOT NULL without a server default.

A migration newer than the previous release runs while that release still serves (servicekit.releases), so
a drop or rename breaks the old code's reads unless the old code had already stopped using what goes, and a
NOT NULL without a default breaks its inserts, which leave the column out. A
migration that means it says so at module level, naming the release that stopped using it in a comment::

    contract = True  # 0.3.0 stopped reading contacts.fax

and ``tests/test_expand_contract.py`` then checks that the current models do not use it either.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# Raw SQL in op.execute that drops or renames.
_SQL = re.compile(r"\b(DROP\s+(COLUMN|TABLE)|RENAME\s+(COLUMN|TO))\b", re.IGNORECASE)
# A release named in the comment beside (or above) ``contract = True``: a version like 0.3 or 0.3.1.
_RELEASE = re.compile(r"#.*\b\d+\.\d+(\.\d+)?\b")


@dataclass(frozen=True)
class ContractOperation:
    """``column`` is None when a whole table goes. ``removes``: the table or column is gone (a drop, or the old
    name of a rename); otherwise it stays but refuses what the previous release writes (NOT NULL without a
    default: that release's inserts leave it out)."""

    operation: str
    table: str
    column: str | None
    line: int
    removes: bool = True

    def __str__(self) -> str:
        what = f"{self.table}.{self.column}" if self.column else self.table
        return f"line {self.line}: {self.operation} {what}"


def _text(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _argument(call: ast.Call, position: int, name: str) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return _text(keyword.value)
    return _text(call.args[position]) if len(call.args) > position else None


def _batch_table(item: ast.withitem) -> tuple[str, str] | None:
    """``with op.batch_alter_table("t") as batch_op`` → ("batch_op", "t")."""
    call = item.context_expr
    if (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "batch_alter_table"
        and isinstance(item.optional_vars, ast.Name)
    ):
        return item.optional_vars.id, _argument(call, 0, "table_name") or "?"
    return None


class _Finder(ast.NodeVisitor):
    """Every drop or rename call, whoever it is called on (``op``, a batch, an alias): a call the finder
    cannot place in a table is still reported, with table ``?``."""

    def __init__(self) -> None:
        self.batches: dict[str, str] = {}
        self.found: list[ContractOperation] = []

    def visit_With(self, node: ast.With) -> None:
        saved = dict(self.batches)
        self.batches.update(dict(b for item in node.items if (b := _batch_table(item))))
        self.generic_visit(node)
        self.batches = saved

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and (match := _SQL.search(node.value)):
            self.found.append(ContractOperation(f"SQL {match.group(1).upper()}", "?", None, node.lineno))

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        if not isinstance(node.func, ast.Attribute):
            return
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        batch_table = self.batches.get(owner) if owner else None
        name = node.func.attr
        offset = 0 if batch_table else 1  # op.drop_column(table, column) / batch_op.drop_column(column)
        table = batch_table or _argument(node, 0, "table_name") or "?"
        if name == "drop_table":
            self.found.append(ContractOperation(name, table, None, node.lineno))
        elif name == "rename_table":
            old = _argument(node, 0, "old_table_name") or "?"
            self.found.append(ContractOperation(name, old, None, node.lineno))
        elif name == "drop_column":
            column = _argument(node, offset, "column_name") or "?"
            self.found.append(ContractOperation(name, table, column, node.lineno))
        elif name == "alter_column" and _keyword(node, "new_column_name") is not None:
            column = _argument(node, offset, "column_name") or "?"
            self.found.append(ContractOperation("rename_column", table, column, node.lineno))
        elif (
            name == "alter_column"
            and _is_false(_keyword(node, "nullable"))
            and _keyword(node, "server_default") is None
        ):
            column = _argument(node, offset, "column_name") or "?"
            self.found.append(ContractOperation("set_not_null", table, column, node.lineno, removes=False))
        elif name == "add_column":
            added = node.args[offset] if len(node.args) > offset else _keyword(node, "column")
            if (
                isinstance(added, ast.Call)
                and _is_false(_keyword(added, "nullable"))
                and _keyword(added, "server_default") is None
                and _keyword(added, "primary_key") is None
            ):
                column = _argument(added, 0, "name") or "?"
                self.found.append(ContractOperation("add_not_null_column", table, column, node.lineno, removes=False))


def contract_operations(source: str) -> list[ContractOperation]:
    """The contracting operations in a migration's ``upgrade()`` (its ``downgrade()`` is expected to drop)."""
    finder = _Finder()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == "upgrade":
            finder.visit(node)
    return sorted(finder.found, key=lambda found: found.line)


def declared_contract(source: str) -> str | None:
    """The comment naming the release, when the module declares ``contract = True``; ``""`` when it declares
    it without naming one; None when it does not declare it."""
    tree = ast.parse(source)
    lines = source.splitlines()
    for node in tree.body:
        target = (
            node.targets[0]
            if isinstance(node, ast.Assign) and len(node.targets) == 1
            else node.target
            if isinstance(node, ast.AnnAssign)
            else None
        )
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id == "contract":
            if not (isinstance(value, ast.Constant) and value.value is True):
                return None
            nearby = [lines[node.lineno - 1]] + ([lines[node.lineno - 2]] if node.lineno > 1 else [])
            for line in nearby:
                match = _RELEASE.search(line)
                if match:
                    return line[line.index("#") :].lstrip("# ").strip()
            return ""
    return None
