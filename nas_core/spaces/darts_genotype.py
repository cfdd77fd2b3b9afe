"""DARTS cell genotypes: the dataclass, safe parsing of the reference text form, JSON, presets, DOT.

The canonical text is the reference repositories' own ``Genotype(...)`` form, so a genotype printed
by ``quark0/darts``, ``PC-DARTS`` or ``AutoDL-Projects`` pastes straight in and ours pastes back::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5],
             reduce=[('max_pool_3x3', 0), ...], reduce_concat=[2, 3, 4, 5])

Each cell lists 8 ``(op, input)`` pairs, two per intermediate node; node ``i`` (2..5, the reference's
state indexing) may take input 0 (= c_{k-2}), 1 (= c_{k-1}) or any earlier node 2..i-1. The text is
read with ``ast.parse`` and checked node by node (no ``eval``): ``range(2, 6)`` for a concat (as the
PC-DARTS logs print it) and AutoDL's per-node nested pairs ``[(('op', 0), ('op', 1)), ...]`` are accepted.
"""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass
from typing import Any

from nas_core.errors import GenotypeError
from nas_core.spaces.base import check_document, json_document

OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
PARAM_FREE = frozenset({"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"})
STEPS = 4  # intermediate nodes per cell
#: (node, input) pairs in the reference's alpha-row order: node 2 <- 0, 1; node 3 <- 0, 1, 2; ...
EDGE_PAIRS: tuple[tuple[int, int], ...] = tuple((i + 2, j) for i in range(STEPS) for j in range(i + 2))
EDGES: tuple[str, ...] = tuple(f"{i}<-{j}" for i, j in EDGE_PAIRS)
#: slices of the 14 edges that enter node 2, 3, 4, 5
NODE_SLICES: tuple[tuple[int, int], ...] = ((0, 2), (2, 5), (5, 9), (9, 14))
DEFAULT_CONCAT: tuple[int, ...] = (2, 3, 4, 5)
CELL_LABELS = {"normal": "normal", "reduce": "reduction"}

Pair = tuple[str, int]


def _validate_cell(cell: str, pairs: Any, concat: Any) -> tuple[tuple[Pair, ...], tuple[int, ...]]:
    """Check one cell's pairs and concat; the error names the cell, the node and the problem."""
    if not isinstance(pairs, (list, tuple)):
        raise GenotypeError(f"{cell} cell: expected a list of (op, input) pairs, got {type(pairs).__name__}")
    if len(pairs) % 2 or not 2 <= len(pairs) <= 2 * STEPS:
        raise GenotypeError(
            f"{cell} cell: expected {2 * STEPS} (op, input) pairs (2 per node for {STEPS} nodes; a cell grown node by "
            f"node has 2, 4 or 6), got {len(pairs)}"
        )
    nodes = len(pairs) // 2
    out: list[Pair] = []
    for n, pair in enumerate(pairs):
        node = 2 + n // 2
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise GenotypeError(f"{cell} cell, node {node}: expected an (op, input) pair, got {pair!r}")
        op, idx = pair
        if not isinstance(op, str):
            raise GenotypeError(f"{cell} cell, node {node}: op must be a string, got {op!r}")
        if op == "none":
            raise GenotypeError(f"{cell} cell, node {node}: the 'none' op cannot appear in a genotype")
        if op not in OPS:
            raise GenotypeError(f"{cell} cell, node {node}: unknown op {op!r}; DARTS ops are {', '.join(OPS[1:])}")
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise GenotypeError(f"{cell} cell, node {node}: input index must be an integer, got {idx!r}")
        if not 0 <= idx < node:
            raise GenotypeError(
                f"{cell} cell, node {node}: input index {idx} out of range (node {node} takes inputs 0..{node - 1})"
            )
        out.append((op, idx))
    if not isinstance(concat, (list, tuple)) or not concat:
        raise GenotypeError(f"{cell}_concat: expected a non-empty list of node indices, got {concat!r}")
    cc: list[int] = []
    for v in concat:
        if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= nodes + 1:
            raise GenotypeError(f"{cell}_concat: {v!r} is not an intermediate node (2..{nodes + 1})")
        if v in cc:
            raise GenotypeError(f"{cell}_concat: node {v} listed twice")
        cc.append(v)
    return tuple(out), tuple(cc)


@dataclass(frozen=True)
class DartsGenotype:
    """Both cells of a DARTS architecture: 8 (op, input) pairs and the concatenated nodes, per cell type.

    A cell may also have fewer nodes (2, 4 or 6 pairs), as progressive search grows cells node by node
    (PNAS): its nodes are 2..1+len(pairs)//2."""

    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Pair, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        n, nc = _validate_cell("normal", self.normal, self.normal_concat)
        r, rc = _validate_cell("reduce", self.reduce, self.reduce_concat)
        object.__setattr__(self, "normal", n)
        object.__setattr__(self, "normal_concat", nc)
        object.__setattr__(self, "reduce", r)
        object.__setattr__(self, "reduce_concat", rc)

    def cell(self, cell_type: str) -> tuple[tuple[Pair, ...], tuple[int, ...]]:
        """(pairs, concat) of ``"normal"`` or ``"reduce"``."""
        if cell_type == "normal":
            return self.normal, self.normal_concat
        if cell_type == "reduce":
            return self.reduce, self.reduce_concat
        raise GenotypeError(f"unknown cell type {cell_type!r}; DARTS cells are normal and reduce")

    def __str__(self) -> str:
        return format_genotype(self)


def _random_cell(rng: random.Random) -> tuple[Pair, ...]:
    pairs: list[Pair] = []
    for node in range(2, STEPS + 2):
        for j in sorted(rng.sample(range(node), 2)):  # two distinct inputs, as derived cells have
            pairs.append((rng.choice(OPS[1:]), j))
    return tuple(pairs)


def random_genotype(rng: random.Random) -> DartsGenotype:
    """Both cells drawn uniformly: per node two distinct earlier inputs, each with one of the 7 ops."""
    return DartsGenotype(_random_cell(rng), DEFAULT_CONCAT, _random_cell(rng), DEFAULT_CONCAT)


def mutate_genotype(g: DartsGenotype, rng: random.Random) -> DartsGenotype:
    """One (op, input) pair of one cell changes, its op or its input with equal chance (Real et al.'s op and
    hidden-state mutations); a new input differs from the node's other input."""
    cell = rng.choice(("normal", "reduce"))
    pairs, concat = g.cell(cell)
    pairs_l = list(pairs)
    k = rng.randrange(len(pairs_l))
    op, idx = pairs_l[k]
    node = 2 + k // 2
    other = pairs_l[k ^ 1][1]
    inputs = [j for j in range(node) if j not in (idx, other)]
    if rng.random() < 0.5 or not inputs:
        pairs_l[k] = (rng.choice([o for o in OPS[1:] if o != op]), idx)
    else:
        pairs_l[k] = (op, rng.choice(inputs))
    if cell == "normal":
        return DartsGenotype(tuple(pairs_l), concat, g.reduce, g.reduce_concat)
    return DartsGenotype(g.normal, g.normal_concat, tuple(pairs_l), concat)


def _fmt_pairs(pairs: tuple[Pair, ...]) -> str:
    return "[" + ", ".join(f"({op!r}, {idx})" for op, idx in pairs) + "]"


def format_genotype(g: DartsGenotype) -> str:
    """The reference ``Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])`` text."""
    return (
        f"Genotype(normal={_fmt_pairs(g.normal)}, normal_concat={list(g.normal_concat)}, "
        f"reduce={_fmt_pairs(g.reduce)}, reduce_concat={list(g.reduce_concat)})"
    )


def _literal(node: ast.AST, what: str) -> Any:
    """A Python literal, or ``range(a, b)`` / ``list(range(a, b))`` with integer literals; nothing else."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        if node.func.id == "list" and len(node.args) == 1:
            return list(_literal(node.args[0], what))
        if node.func.id == "range" and 1 <= len(node.args) <= 3:
            args = [_literal(a, what) for a in node.args]
            if all(isinstance(a, int) and not isinstance(a, bool) for a in args):
                return list(range(*args))
        raise GenotypeError(f"{what}: only literals and range(a, b) are allowed, not a call to {node.func.id}()")
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise GenotypeError(
            f"{what}: {ast.unparse(node)[:60]!r} is not a literal (only literals and range(a, b) are allowed)"
        ) from None


def _flatten_pairs(value: Any) -> Any:
    """Accept AutoDL's per-node nesting ``[(('op', 0), ('op', 1)), ...]`` as well as the flat list."""
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (list, tuple)) and v and all(isinstance(p, (list, tuple)) for p in v) for v in value)
    ):
        return [tuple(p) for v in value for p in v]
    return value


_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


def _from_fields(fields: dict[str, Any]) -> DartsGenotype:
    missing = [f for f in _FIELDS if f not in fields]
    # Reference genotypes always carry concat; a missing one means the default (all the cell's nodes).
    for f in ("normal_concat", "reduce_concat"):
        if f in missing:
            pairs = fields.get(f.removesuffix("_concat"))
            nodes = len(_flatten_pairs(pairs)) // 2 if isinstance(pairs, (list, tuple)) else STEPS
            fields[f] = list(range(2, 2 + nodes)) if nodes else list(DEFAULT_CONCAT)
            missing.remove(f)
    if missing:
        raise GenotypeError(f"genotype: missing field(s) {', '.join(missing)}")
    unknown = [f for f in fields if f not in _FIELDS]
    if unknown:
        raise GenotypeError(f"genotype: unknown field(s) {', '.join(unknown)}; expected {', '.join(_FIELDS)}")
    return DartsGenotype(
        _flatten_pairs(fields["normal"]),
        fields["normal_concat"],
        _flatten_pairs(fields["reduce"]),
        fields["reduce_concat"],
    )


def parse_text(text: str) -> DartsGenotype:
    """Parse the reference ``Genotype(...)`` text safely (``ast``, literals only)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise GenotypeError(f"genotype text is not valid: {exc.msg} at column {exc.offset}") from None
    call = tree.body
    func = getattr(call, "func", None)
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if not isinstance(call, ast.Call) or name != "Genotype":
        raise GenotypeError(
            "expected Genotype(normal=[(op, input), ...], normal_concat=[...], reduce=[...], reduce_concat=[...]),"
            " a JSON document, or a preset name (" + ", ".join(PRESETS) + ")"
        )
    if len(call.args) > len(_FIELDS):
        raise GenotypeError(f"Genotype(...) takes at most {len(_FIELDS)} positional fields, got {len(call.args)}")
    fields: dict[str, Any] = {}
    for fname, node in zip(_FIELDS, call.args):
        fields[fname] = _literal(node, fname)
    for kw in call.keywords:
        if kw.arg is None:
            raise GenotypeError("Genotype(...): **kwargs are not allowed")
        if kw.arg in fields:
            raise GenotypeError(f"Genotype(...): field {kw.arg} given twice")
        fields[kw.arg] = _literal(kw.value, kw.arg)
    return _from_fields(fields)


def genotype_to_json(g: DartsGenotype) -> dict[str, Any]:
    return {
        "space": "darts",
        "format": 1,
        "genotype": format_genotype(g),
        "normal": [[op, idx] for op, idx in g.normal],
        "normal_concat": list(g.normal_concat),
        "reduce": [[op, idx] for op, idx in g.reduce],
        "reduce_concat": list(g.reduce_concat),
    }


def genotype_from_json(doc: Any) -> DartsGenotype:
    """Read a document of :func:`genotype_to_json` (text, structured fields, or a ``preset`` name)."""
    doc = check_document(doc, "darts")
    structured = None
    if "normal" in doc or "reduce" in doc:
        structured = _from_fields({f: doc[f] for f in _FIELDS if f in doc})
    text = doc.get("genotype", doc.get("preset"))
    if text is not None:
        if not isinstance(text, str):
            raise GenotypeError("genotype JSON: 'genotype' must be a string")
        g = parse_genotype(text)
        if structured is not None and structured != g:
            raise GenotypeError("genotype JSON: the structured cells disagree with 'genotype'")
        return g
    if structured is None:
        raise GenotypeError("genotype JSON needs 'genotype' (text), 'preset', or 'normal'/'reduce' (pair lists)")
    return structured


def _g(normal: list[Pair], reduce: list[Pair]) -> DartsGenotype:
    return DartsGenotype(tuple(normal), DEFAULT_CONCAT, tuple(reduce), DEFAULT_CONCAT)


S3, S5, D3, D5, SK, MX, AV = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "skip_connect",
    "max_pool_3x3",
    "avg_pool_3x3",
)
#: Published cells (ALGORITHMS.md: quark0/darts, PC-DARTS, AutoDL-Projects genotypes.py).
PRESETS: dict[str, DartsGenotype] = {
    "DARTS_V1": _g(
        [(S3, 1), (S3, 0), (SK, 0), (S3, 1), (SK, 0), (S3, 1), (S3, 0), (SK, 2)],
        [(MX, 0), (MX, 1), (SK, 2), (MX, 0), (MX, 0), (SK, 2), (SK, 2), (AV, 0)],
    ),
    "DARTS_V2": _g(
        [(S3, 0), (S3, 1), (S3, 0), (S3, 1), (S3, 1), (SK, 0), (SK, 0), (D3, 2)],
        [(MX, 0), (MX, 1), (SK, 2), (MX, 1), (MX, 0), (SK, 2), (SK, 2), (MX, 1)],
    ),
    "PC_DARTS": _g(
        [(S3, 1), (SK, 0), (S3, 0), (D3, 1), (S5, 0), (S3, 1), (AV, 0), (D3, 1)],
        [(S5, 1), (MX, 0), (S5, 1), (S5, 2), (S3, 0), (S3, 3), (S3, 1), (S3, 2)],
    ),
    "GDAS_V1": _g(
        [(SK, 0), (SK, 1), (SK, 0), (S5, 2), (S3, 3), (SK, 0), (S5, 4), (S3, 3)],
        [(S5, 0), (S3, 1), (S5, 2), (S5, 1), (D5, 2), (S3, 1), (S5, 0), (S5, 1)],
    ),
}
#: other spellings users carry over from the reference code
PRESET_ALIASES = {"DARTS": "DARTS_V2", "PC_DARTS_CIFAR": "PC_DARTS", "PCDARTS": "PC_DARTS", "GDAS": "GDAS_V1"}


def preset(name: str) -> DartsGenotype | None:
    """The preset called ``name`` (case-insensitive, ``-`` or ``_``), else None."""
    key = name.strip().upper().replace("-", "_")
    key = PRESET_ALIASES.get(key, key)
    return PRESETS.get(key)


def parse_genotype(text: str) -> DartsGenotype:
    """A preset name, a JSON document, or the reference ``Genotype(...)`` text."""
    if not isinstance(text, str):
        raise GenotypeError(f"genotype must be text, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise GenotypeError("empty DARTS genotype; give a preset name (" + ", ".join(PRESETS) + ") or Genotype(...)")
    p = preset(text)
    if p is not None:
        return p
    if text.startswith("{"):
        return genotype_from_json(json_document(text))
    if "(" not in text:
        raise GenotypeError(f"unknown DARTS preset {text!r}; presets: {', '.join(PRESETS)}")
    return parse_text(text)


_OP_COLORS = {
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#17becf",
    "dil_conv_3x3": "#2ca02c",
    "dil_conv_5x5": "#98df8a",
    "skip_connect": "#7f7f7f",
    "max_pool_3x3": "#d62728",
    "avg_pool_3x3": "#ff7f0e",
}


def genotype_dot(g: DartsGenotype) -> str:
    """Both cells in one DOT graph: two clusters (normal / reduction), edges labelled with their ops."""
    lines = [
        "digraph darts {",
        '  rankdir=LR; bgcolor="transparent"; compound=true;',
        '  node [shape=box, style="rounded,filled", fillcolor="#dbe9f6", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for cell in ("normal", "reduce"):
        pairs, concat = g.cell(cell)
        p = cell[0]
        lines.append(f"  subgraph cluster_{cell} {{")
        lines.append(f'    label="{CELL_LABELS[cell]} cell"; fontname="Helvetica"; style="rounded"; color="#999999";')
        lines.append(f'    {p}_0 [label="c_{{k-2}}", fillcolor="#c8e6c9"];')
        lines.append(f'    {p}_1 [label="c_{{k-1}}", fillcolor="#c8e6c9"];')
        for node in range(2, len(pairs) // 2 + 2):
            lines.append(f'    {p}_{node} [label="{node - 2}", shape=circle];')
        lines.append(f'    {p}_out [label="c_{{k}}", fillcolor="#f6e3c8"];')
        for n, (op, idx) in enumerate(pairs):
            node = 2 + n // 2
            color = _OP_COLORS.get(op, "#333333")
            lines.append(f'    {p}_{idx} -> {p}_{node} [label="{op}", color="{color}", fontcolor="{color}"];')
        for node in concat:
            lines.append(f'    {p}_{node} -> {p}_out [style=dashed, color="#999999"];')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines)
