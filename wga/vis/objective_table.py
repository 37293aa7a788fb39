"""The objectives a render can maximise, what each needs, and how they compose — free of Keras.

One row per objective: its name, a line for people, the layers it works on (``spatial`` feature
maps, ``dense`` class layers; none for the regularisers that read the image), and whether it reads
a unit, a position and a vector. Front ends (recipe validation, ``render --objective``,
``GET /api/presets``) read this table before any model loads; :mod:`wga.vis.objective` registers
each row's scoring function under the same name (a test checks that both sides list the same).

Objectives compose as in Lucid: a recipe's ``objective`` is a row's name (``channel``: the legacy
form, meaning ``channel(layer, unit)`` with the recipe's layer and unit) or a linear combination
such as ``channel(mixed5, 3) - 0.5 * channel(mixed5, 7) + 0.05 * tv``. :func:`parse_objective`
reads it with a small recursive-descent parser (never ``eval``) into an :class:`Objective`, whose
canonical text is what the recipe stores; arguments left out come from the recipe
(:meth:`Objective.bind`).

Adding an objective: one row here, one ``@scores("name")`` function in :mod:`wga.vis.objective`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from wga.errors import InvalidInput, closest_names

LayerKind = Literal["spatial", "dense"]
Need = Literal["no", "optional", "required"]
AUTO = "auto"  # channel for feature maps, logit for Dense layers
COSINE_POWER = 2.0  # the direction objectives' default: the Activation Atlas article's dot × cos²


@dataclass(frozen=True)
class ObjectiveSpec:
    """What one objective needs from a recipe and a layer."""

    name: str
    description: str
    layers: frozenset[LayerKind]
    unit: bool = True  # reads the recipe's unit (False: the whole layer)
    position: Need = "no"  # a (y, x) position in the layer's feature map
    vector: Need = "no"  # a direction in the layer's channel space, by reference
    couples_batch: bool = False  # compares the batch's elements (diversity): one batch, no split

    @property
    def reads_layer(self) -> bool:
        """False for the regularisers that read the image itself (total variation, L1, L2)."""
        return bool(self.layers)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "layers": sorted(self.layers),
            "unit": self.unit,
            "position": self.position,
            "vector": self.vector,
            "couples_batch": self.couples_batch,
        }


_SPATIAL: frozenset[LayerKind] = frozenset({"spatial"})
_DENSE: frozenset[LayerKind] = frozenset({"dense"})
_IMAGE: frozenset[LayerKind] = frozenset()

OBJECTIVES: dict[str, ObjectiveSpec] = {
    spec.name: spec
    for spec in (
        ObjectiveSpec("channel", "spatial mean of the unit's channel (Lucid's channel)", _SPATIAL),
        ObjectiveSpec(
            "neuron",
            "the unit's channel at one position: the centre, or the given [y, x]",
            _SPATIAL,
            position="optional",
        ),
        ObjectiveSpec("logit", "a class unit of a Dense layer, before its softmax", _DENSE),
        ObjectiveSpec(
            "layer", "DeepDream: mean squared activation of the whole layer", _SPATIAL, unit=False
        ),
        ObjectiveSpec(
            "direction",
            "dot × cos^p with a direction in channel space, at the centre or the given [y, x] "
            "(the Activation Atlas's icons)",
            _SPATIAL,
            unit=False,
            position="optional",
            vector="required",
        ),
        ObjectiveSpec(
            "direction_map",
            "dot × cos^p with a direction in channel space, averaged over the feature map",
            _SPATIAL,
            unit=False,
            vector="required",
        ),
        ObjectiveSpec(
            "diversity",
            "Lucid's diversity: the mean cosine similarity of this element's Gram matrix with the "
            "others' in the batch (subtract it: '- 100 * diversity')",
            _SPATIAL,
            unit=False,
            couples_batch=True,
        ),
        ObjectiveSpec("tv", "total variation of the image (subtract it to smooth)", _IMAGE, False),
        ObjectiveSpec("l1", "mean |image - 0.5| (subtract it for a greyer image)", _IMAGE, False),
        ObjectiveSpec("l2", "root mean square of image - 0.5 (Lucid's L2)", _IMAGE, False),
    )
}


def objective_names() -> tuple[str, ...]:
    """Every name a recipe may carry: ``auto`` first, then the table's rows."""
    return (AUTO, *OBJECTIVES)


def objective_spec(name: str) -> ObjectiveSpec | None:
    """The row for ``name`` (``None`` for ``auto``, which a layer resolves); InvalidInput if
    unknown."""
    if name == AUTO:
        return None
    try:
        return OBJECTIVES[name]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unknown objective {name!r}: {closest_names(str(name), list(objective_names()))}"
        ) from None


def check_needs(name: str, position: object, vector: object) -> None:
    """Raise InvalidInput when a recipe gives a position or vector that its objective ``name``
    (a row's name or an expression) does not read, or lacks one it requires."""
    if name == AUTO:
        reads = {"position": "no", "vector": "no"}
    elif name in OBJECTIVES:
        spec = OBJECTIVES[name]
        reads = {"position": spec.position, "vector": spec.vector}
    else:
        objective = parse_objective(name)
        reads = {}
        for field in ("position", "vector"):
            needs = {
                getattr(call.spec, field)
                for _, call in objective.terms
                if getattr(call, field) is None
            }
            given = objective.reads(field)
            reads[field] = "required" if "required" in needs else ("optional" if given else "no")
    for field, given in (("position", position), ("vector", vector)):
        need = reads[field]
        if given is not None and need == "no":
            raise InvalidInput(
                f"objective {name!r} takes no {field}: leave it out, or choose an objective "
                f"that reads one ({', '.join(_reading(field)) or 'none yet'})"
            )
        if given is None and need == "required":
            raise InvalidInput(f"objective {name!r} needs a {field}: add one to the request")


def resolve_objective(name: str, spatial: bool) -> ObjectiveSpec:
    """The objective a layer gets: ``auto`` → channel for feature maps, logit for Dense layers;
    InvalidInput when the objective does not fit the layer."""
    spec = objective_spec(name)
    if spec is None:
        return OBJECTIVES["channel" if spatial else "logit"]
    kind: LayerKind = "spatial" if spatial else "dense"
    if kind not in spec.layers:
        fitting = [row.name for row in OBJECTIVES.values() if kind in row.layers]
        raise InvalidInput(
            f"{name} needs a {' or '.join(sorted(spec.layers))} layer; "
            f"use {', '.join(fitting)} for a {'spatial' if spatial else 'Dense'} layer"
        )
    return spec


def _reading(field: str) -> list[str]:
    return [row.name for row in OBJECTIVES.values() if getattr(row, field) != "no"]


# -- composition --------------------------------------------------------------------------------

MAX_OBJECTIVE_LENGTH = 1000
MAX_TERMS = 16
SYNTAX = (
    "a name (channel) or a sum of weighted calls, e.g. "
    "'channel(mixed5, 3) - 0.5 * channel(mixed5, 7) + 0.05 * tv'; a call's arguments: layer, "
    "unit, then y=, x=, vector='<sha256>', cos_power="
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_./:]*\Z")


@dataclass(frozen=True)
class Call:
    """One term's objective with its arguments; ``None``: taken from the recipe (:meth:`bind`)."""

    name: str
    layer: str | None = None
    unit: int | None = None
    position: tuple[int, int] | None = None
    vector: str | None = None
    cos_power: float | None = None

    @property
    def spec(self) -> ObjectiveSpec:
        return OBJECTIVES[self.name]

    def text(self) -> str:
        """Canonical text: ``name(layer, unit, y=…, x=…, vector='…', cos_power=…)``, or the bare
        name when every argument comes from the recipe."""
        args = []
        if self.layer is not None:
            args.append(self.layer if _NAME.match(self.layer) else repr(self.layer))
        if self.unit is not None:
            args.append(("" if self.layer is not None else "unit=") + str(self.unit))
        if self.position is not None:
            args += [f"y={self.position[0]}", f"x={self.position[1]}"]
        if self.vector is not None:
            args.append(f"vector='{self.vector}'")
        if self.cos_power is not None:
            args.append(f"cos_power={_number(self.cos_power)}")
        return f"{self.name}({', '.join(args)})" if args else self.name


@dataclass(frozen=True)
class Objective:
    """A weighted sum of calls (each weight non-zero, each call once), in the order written."""

    terms: tuple[tuple[float, Call], ...]

    def text(self) -> str:
        """The canonical text (what a recipe stores and its render id hashes)."""
        out = ""
        for index, (weight, call) in enumerate(self.terms):
            sign = "-" if weight < 0 else "+"
            size = abs(weight)
            body = call.text() if size == 1 else f"{_number(size)} * {call.text()}"
            if index == 0:
                out = body if sign == "+" else f"-{body}"
            else:
                out += f" {sign} {body}"
        return out

    @property
    def couples_batch(self) -> bool:
        return any(call.spec.couples_batch for _, call in self.terms)

    def layers(self) -> list[str]:
        """The layers the (bound) terms read, first-seen order."""
        seen: dict[str, None] = {}
        for _, call in self.terms:
            if call.spec.reads_layer and call.layer is not None:
                seen.setdefault(call.layer)
        return list(seen)

    def reads(self, field: str) -> bool:
        """Whether some term reads ``position`` or ``vector``."""
        return any(getattr(call.spec, field) != "no" for _, call in self.terms)

    def bind(
        self,
        layer: str,
        unit: int,
        position: tuple[int, int] | None = None,
        vector: str | None = None,
        cos_power: float | None = None,
    ) -> Objective:
        """Arguments a term leaves out, from the recipe: its layer, unit, position, vector and
        cosine power (only for the terms that read each); InvalidInput when a required vector
        is given nowhere."""
        bound = []
        for weight, call in self.terms:
            spec = call.spec
            filled = replace(
                call,
                layer=call.layer if call.layer is not None or not spec.reads_layer else layer,
                unit=call.unit if call.unit is not None or not spec.unit else unit,
                position=call.position
                if call.position is not None or spec.position == "no"
                else position,
                vector=call.vector if call.vector is not None or spec.vector == "no" else vector,
                cos_power=call.cos_power
                if call.cos_power is not None or spec.vector == "no"
                else (COSINE_POWER if cos_power is None else float(cos_power)),
            )
            if spec.vector == "required" and filled.vector is None:
                raise InvalidInput(
                    f"objective {call.name!r} needs a vector: add one to the request"
                )
            bound.append((weight, filled))
        return Objective(tuple(bound))

    def structure(self) -> tuple:
        """What a compiled step depends on: the bound terms without their units, positions and
        vectors (per-element inputs of the step), so recipes that differ only in those share a
        trace and a batch."""
        return tuple(
            (weight, call.name, call.layer, call.position is not None, call.cos_power)
            for weight, call in self.terms
        )

    def check_layers(self, spatial: Callable[[str], bool]) -> None:
        """InvalidInput unless every term's layer is of a kind its objective reads
        (``spatial(layer)``: feature map or Dense)."""
        for _, call in self.terms:
            if call.layer is None or not call.spec.reads_layer:
                continue
            kind: LayerKind = "spatial" if spatial(call.layer) else "dense"
            if kind not in call.spec.layers:
                fitting = [row.name for row in OBJECTIVES.values() if kind in row.layers]
                raise InvalidInput(
                    f"{call.name} needs a {' or '.join(sorted(call.spec.layers))} layer, and "
                    f"{call.layer!r} is {'a feature map' if kind == 'spatial' else 'a Dense layer'}"
                    f": use {', '.join(fitting)} for it"
                )


def _number(value: float) -> str:
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_./:]*)"
    r"|(?P<string>'[^'\\]*'|\"[^\"\\]*\")"
    r"|(?P<op>[-+*/(),=]))"
)
_KEYWORDS = ("layer", "unit", "y", "x", "vector", "cos_power")


class _Parser:
    """Recursive descent over ``expr := term (('+'|'-') term)*``, ``term := unary (('*'|'/')
    unary)*``, ``unary := ('+'|'-') unary | number | call | '(' expr ')'``; values are linear
    combinations ``{call: weight}`` (key ``None``: a constant), so only linear objectives parse."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        position = 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                self.fail(f"unexpected {text[position:].strip()[:20]!r}", position)
            kind = match.lastgroup or "op"
            self.tokens.append((kind, match.group(kind), match.start(kind)))
            position = match.end()
        self.index = 0

    def fail(self, what: str, at: int | None = None) -> None:
        where = f" at character {at + 1}" if at is not None else ""
        raise InvalidInput(f"objective {self.text[:80]!r}: {what}{where}; write {SYNTAX}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            self.fail(f"expected {value or 'more'} at the end")
        assert token is not None
        if value is not None and token[1] != value:
            self.fail(f"expected {value!r}, got {token[1]!r}", token[2])
        self.index += 1
        return token

    def parse(self) -> dict[Call | None, float]:
        if not self.tokens:
            self.fail("it is empty")
        value = self.expr()
        token = self.peek()
        if token is not None:
            self.fail(f"unexpected {token[1]!r}", token[2])
        return value

    def expr(self) -> dict[Call | None, float]:
        value = self.term()
        while (token := self.peek()) is not None and token[1] in "+-":
            self.take()
            value = _add(value, self.term(), -1.0 if token[1] == "-" else 1.0)
        return value

    def term(self) -> dict[Call | None, float]:
        value = self.unary()
        while (token := self.peek()) is not None and token[1] in "*/":
            self.take()
            right = self.unary()
            if token[1] == "/":
                if set(right) != {None} or right[None] == 0:
                    self.fail("divide only by a non-zero number", token[2])
                value = _scale(value, 1.0 / right[None])
            elif set(value) == {None}:
                value = _scale(right, value[None])
            elif set(right) == {None}:
                value = _scale(value, right[None])
            else:
                self.fail("objectives can be added and weighted, not multiplied", token[2])
        return value

    def unary(self) -> dict[Call | None, float]:
        token = self.take()
        kind, text, at = token
        if text in ("-", "+"):
            return _scale(self.unary(), -1.0 if text == "-" else 1.0)
        if kind == "number":
            return {None: float(text)}
        if text == "(":
            value = self.expr()
            self.take(")")
            return value
        if kind == "name":
            return {self.call(text, at): 1.0}
        self.fail(f"unexpected {text!r}", at)
        raise AssertionError

    def call(self, name: str, at: int) -> Call:
        if name not in OBJECTIVES:
            hint = closest_names(name, list(OBJECTIVES))
            self.fail(f"unknown objective {name!r} ({hint})", at)
        spec = OBJECTIVES[name]
        args: dict[str, Any] = {}
        positional = [
            key for key, wanted in (("layer", spec.reads_layer), ("unit", spec.unit)) if wanted
        ]
        token = self.peek()
        if token is not None and token[1] == "(":
            self.take("(")
            while (token := self.peek()) is not None and token[1] != ")":
                if args:
                    self.take(",")
                    token = self.peek()
                    if token is None or token[1] == ")":
                        self.fail(f"{name}: an argument expected after ','")
                    assert token is not None
                key = None
                following = (
                    self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
                )
                if token[0] == "name" and following is not None and following[1] == "=":
                    key = self.take()[1]
                    self.take("=")
                    if key not in _KEYWORDS:
                        self.fail(f"{name} takes no argument {key!r}", token[2])
                elif len(args) < len(positional):
                    key = positional[len(args)]
                else:
                    self.fail(f"{name} takes {len(positional)} positional argument(s)", token[2])
                if key in args:
                    self.fail(f"{name} got {key!r} twice", token[2])
                args[key] = self.value(key, name)
            self.take(")")
        return _call(name, spec, args, self.fail)

    def value(self, key: str, name: str) -> Any:
        kind, text, at = self.take()
        if kind == "string":
            return text[1:-1]
        if kind in ("name", "number"):
            return text
        self.fail(f"{name}: a value for {key} expected, got {text!r}", at)
        return None


def _add(left: dict, right: dict, sign: float) -> dict:
    out = dict(left)
    for key, weight in right.items():
        out[key] = out.get(key, 0.0) + sign * weight
    return out


def _scale(value: dict, factor: float) -> dict:
    return {key: weight * factor for key, weight in value.items()}


def _call(name: str, spec: ObjectiveSpec, args: dict[str, str], fail: Callable) -> Call:
    """A :class:`Call` from the argument texts, each checked against what ``spec`` reads."""

    def integer(key: str) -> int:
        text = args[key]
        if not text.isdigit():
            fail(f"{name}: {key} must be an integer ≥ 0, got {text!r}")
        return int(text)

    for key, reads in (
        ("layer", spec.reads_layer),
        ("unit", spec.unit),
        ("y", spec.position != "no"),
        ("x", spec.position != "no"),
        ("vector", spec.vector != "no"),
        ("cos_power", spec.vector != "no"),
    ):
        if key in args and not reads:
            fail(f"{name} takes no {key}")
    if ("y" in args) != ("x" in args):
        fail(f"{name}: give both y= and x=, or neither")
    position = (integer("y"), integer("x")) if "y" in args else None
    cos_power = None
    if "cos_power" in args:
        try:
            cos_power = float(args["cos_power"])
        except ValueError:
            fail(f"{name}: cos_power must be a number, got {args['cos_power']!r}")
        if not 0 <= cos_power <= MAX_COS_POWER:
            fail(f"{name}: cos_power must be from 0 to {MAX_COS_POWER:g}")
    vector = args.get("vector")
    if vector is not None and not re.fullmatch(r"[0-9a-f]{64}", vector):
        fail(f"{name}: vector must be a direction's sha256 (64 hex digits), in quotes")
    layer = args.get("layer")
    return Call(
        name,
        layer=layer,
        unit=integer("unit") if "unit" in args else None,
        position=position,
        vector=vector,
        cos_power=cos_power,
    )


MAX_COS_POWER = 16.0


def parse_objective(text: Any) -> Objective:
    """The :class:`Objective` a recipe's ``objective`` text means; InvalidInput, naming the
    problem and the syntax, for anything else (``auto`` is resolved by the layer instead: see
    :func:`resolve_objective`)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"objective must be a non-empty string: {SYNTAX}")
    if len(text) > MAX_OBJECTIVE_LENGTH:
        raise InvalidInput(f"objective is longer than {MAX_OBJECTIVE_LENGTH} characters")
    if text.strip() == AUTO:
        raise InvalidInput("auto is a whole objective, resolved by the layer: not a term")
    combination = _Parser(text).parse()
    constant = combination.pop(None, 0.0)
    if constant:
        raise InvalidInput(
            f"objective {text[:80]!r}: a constant term changes no gradient: leave it out"
        )
    terms = tuple((weight, call) for call, weight in combination.items() if weight)
    if not terms:
        raise InvalidInput(f"objective {text[:80]!r}: its terms cancel out to nothing")
    if len(terms) > MAX_TERMS:
        raise InvalidInput(f"objective {text[:80]!r}: more than {MAX_TERMS} terms")
    return Objective(terms)


def canonical_objective(text: str) -> str:
    """``auto`` and bare names as they are (so recipes made before composition keep their
    ids); any other expression in its canonical form."""
    if text == AUTO or text in OBJECTIVES:
        return text
    return parse_objective(text).text()
