"""A small reader for QEMU QAPI schema files (qapi/*.json) and a validator
of JSON values against the types they declare.

A QAPI schema file is not JSON: it is a sequence of top-level expressions
written like Python dict literals, with single-quoted strings, the bare
words true and false, and '#' comments (doc comments included) running to
the end of the line outside strings.  It is read here with a tokenizer and
a recursive-descent parser, never eval(), so a schema can only ever become
dicts, lists, strings and booleans.

What is built from it (QEMU's docs/devel/qapi-code-gen.rst):
  structs    {'struct': N, 'data': {...}, 'base': B?, 'features': [...]?}
             members '*name' are optional; a member's type is a name, a
             one-element list ['T'] (array of T) or {'type': T, 'if': ...,
             'features': [...]}.  'base' is a struct name or inline members.
  enums      {'enum': N, 'data': ['a', {'name': 'b', 'if': ...}, ...]}
  unions     {'union': N, 'base': B, 'discriminator': D, 'data': {value: T}}
  alternates {'alternate': N, 'data': {name: T}}
  commands, events (kept, with their 'data'/'returns'), includes (noted).
'if' conditions are not evaluated: a conditional member is treated as
optional, a conditional enum value as declared.  Features are kept but do
not change validation.

validate(value, type_name, schema, path, extensions) returns a list of
error strings (empty: the value conforms)."""

import math

BUILTIN_INT_RANGES = {
    "int": (-(1 << 63), (1 << 63) - 1),
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint8": (0, (1 << 8) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
    "uint64": (0, (1 << 64) - 1),
    "size": (0, (1 << 64) - 1),
}
BUILTIN_TYPES = set(BUILTIN_INT_RANGES) | {"str", "number", "bool", "any", "null", "QType"}


class SchemaError(Exception):
    pass


# ---- reading the file -----------------------------------------------------

_PUNCT = "{}[]:,"


def _tokenize(text, fname="<schema>"):
    """Yields (kind, value, line): kind is one of the punctuation characters,
    'str' or 'bool'.  Comments are dropped here, outside strings only."""
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in " \t\r\f\v":
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in _PUNCT:
            yield c, c, line
            i += 1
        elif c == "'":
            j = i + 1
            buf = []
            while True:
                if j >= n or text[j] == "\n":
                    raise SchemaError(f"{fname}:{line}: unterminated string")
                ch = text[j]
                if ch == "\\":
                    # QEMU's parser rejects escapes outright; accept the
                    # obvious ones rather than misreading the string
                    if j + 1 >= n:
                        raise SchemaError(f"{fname}:{line}: bad escape")
                    buf.append(text[j + 1])
                    j += 2
                    continue
                if ch == "'":
                    break
                buf.append(ch)
                j += 1
            yield "str", "".join(buf), line
            i = j + 1
        elif text.startswith("true", i) and not text[i + 4:i + 5].isalnum():
            yield "bool", True, line
            i += 4
        elif text.startswith("false", i) and not text[i + 5:i + 6].isalnum():
            yield "bool", False, line
            i += 5
        else:
            raise SchemaError(f"{fname}:{line}: unexpected character {c!r}")


class _Parser:
    def __init__(self, text, fname):
        self.toks = list(_tokenize(text, fname))
        self.pos = 0
        self.fname = fname

    def _peek(self):
        return self.toks[self.pos] if self.pos < len(self.toks) else (None, None, None)

    def _take(self, kind=None):
        tok = self._peek()
        if tok[0] is None:
            raise SchemaError(f"{self.fname}: unexpected end of file")
        if kind is not None and tok[0] != kind:
            raise SchemaError(f"{self.fname}:{tok[2]}: expected {kind!r}, got {tok[1]!r}")
        self.pos += 1
        return tok

    def value(self):
        kind, val, line = self._peek()
        if kind == "{":
            self._take()
            out = {}
            if self._peek()[0] == "}":
                self._take()
                return out
            while True:
                _, key, kline = self._take("str")
                if key in out:
                    raise SchemaError(f"{self.fname}:{kline}: duplicate key {key!r}")
                self._take(":")
                out[key] = self.value()
                if self._peek()[0] == ",":
                    self._take()
                    if self._peek()[0] == "}":   # tolerate a trailing comma
                        self._take()
                        return out
                    continue
                self._take("}")
                return out
        if kind == "[":
            self._take()
            out = []
            if self._peek()[0] == "]":
                self._take()
                return out
            while True:
                out.append(self.value())
                if self._peek()[0] == ",":
                    self._take()
                    if self._peek()[0] == "]":
                        self._take()
                        return out
                    continue
                self._take("]")
                return out
        if kind in ("str", "bool"):
            self._take()
            return val
        raise SchemaError(f"{self.fname}:{line}: unexpected {val!r}")

    def expressions(self):
        """Top-level expressions, each a dict, with the line it starts on."""
        out = []
        while self._peek()[0] is not None:
            line = self._peek()[2]
            if self._peek()[0] != "{":
                raise SchemaError(f"{self.fname}:{line}: top-level expression must be an object")
            out.append((self.value(), line))
        return out


def parse_expressions(text, fname="<schema>"):
    """The top-level expressions of a QAPI schema text, as (dict, line)."""
    return _Parser(text, fname).expressions()


# ---- the schema model -----------------------------------------------------

class Member:
    __slots__ = ("name", "type", "optional", "conditional", "features")

    def __init__(self, name, type_, optional, conditional=False, features=()):
        self.name = name
        self.type = type_
        self.optional = optional
        self.conditional = conditional
        self.features = tuple(features)

    def __repr__(self):
        return (f"Member({self.name!r}, {self.type!r}, optional={self.optional}"
                + (", if" if self.conditional else "") + ")")


def _member_list(data, where):
    """Members from a QAPI 'data' dict (struct, union base, command args)."""
    if not isinstance(data, dict):
        raise SchemaError(f"{where}: 'data' must be an object, not {data!r}")
    out = []
    for key, spec in data.items():
        optional = key.startswith("*")
        name = key[1:] if optional else key
        conditional = False
        features = ()
        if isinstance(spec, dict):
            if "type" not in spec:
                raise SchemaError(f"{where}: member {key!r} has no 'type'")
            conditional = "if" in spec
            features = [f["name"] if isinstance(f, dict) else f for f in spec.get("features", [])]
            spec = spec["type"]
        _check_type_spec(spec, f"{where}: member {key!r}")
        # an 'if' member may be compiled out: a client can not rely on it
        out.append(Member(name, spec, optional or conditional, conditional, features))
    return out


def _check_type_spec(spec, where):
    if isinstance(spec, str):
        return
    if isinstance(spec, list) and len(spec) == 1 and isinstance(spec[0], str):
        return
    raise SchemaError(f"{where}: bad type {spec!r}")


class Struct:
    def __init__(self, name, members, base=None, features=(), line=None):
        self.name = name
        self.own_members = members
        self.base = base          # struct name, or None
        self.features = tuple(features)
        self.line = line


class Enum:
    def __init__(self, name, values, line=None):
        self.name = name
        self.values = values      # list of names
        self.line = line


class Union:
    def __init__(self, name, base, discriminator, branches, line=None):
        self.name = name
        self.base = base                # struct name (inline bases are registered)
        self.discriminator = discriminator
        self.branches = branches        # {enum value: struct name}
        self.line = line


class Alternate:
    def __init__(self, name, choices, line=None):
        self.name = name
        self.choices = choices          # {name: type}
        self.line = line


class Schema:
    def __init__(self):
        self.types = {}         # name -> Struct | Enum | Union | Alternate
        self.commands = {}      # name -> expression
        self.events = {}        # name -> expression
        self.includes = []      # file names the schema includes (not read)
        self.sources = []

    # -- loading --

    @classmethod
    def from_file(cls, path):
        s = cls()
        s.load_file(path)
        return s

    def load_file(self, path):
        with open(path, encoding="utf-8") as f:
            self.add_source(f.read(), path)
        return self

    def add_source(self, text, fname="<schema>"):
        self.sources.append(fname)
        for expr, line in parse_expressions(text, fname):
            self._add_expr(expr, f"{fname}:{line}", line)
        return self

    def _define(self, name, obj, where):
        if name in self.types:
            raise SchemaError(f"{where}: type {name!r} defined twice")
        self.types[name] = obj

    def _add_expr(self, e, where, line):
        meta = [k for k in ("include", "pragma", "struct", "enum", "union",
                            "alternate", "command", "event") if k in e]
        if len(meta) != 1:
            raise SchemaError(f"{where}: can not tell what this expression defines: {sorted(e)}")
        kind = meta[0]
        name = e[kind]
        if kind == "include":
            self.includes.append(name)
        elif kind == "pragma":
            pass
        elif kind == "struct":
            base = e.get("base")
            if isinstance(base, dict):
                bname = f"q_obj_{name}-base"
                self._define(bname, Struct(bname, _member_list(base, where), line=line), where)
                base = bname
            self._define(name, Struct(name, _member_list(e.get("data", {}), where), base,
                                      [f["name"] if isinstance(f, dict) else f
                                       for f in e.get("features", [])], line), where)
        elif kind == "enum":
            values = []
            for v in e.get("data", []):
                if isinstance(v, dict):
                    values.append(v["name"])
                elif isinstance(v, str):
                    values.append(v)
                else:
                    raise SchemaError(f"{where}: bad enum value {v!r}")
            self._define(name, Enum(name, values, line), where)
        elif kind == "union":
            base = e.get("base")
            if isinstance(base, dict):
                bname = f"q_obj_{name}-base"
                self._define(bname, Struct(bname, _member_list(base, where), line=line), where)
                base = bname
            if base is None or "discriminator" not in e:
                raise SchemaError(f"{where}: union {name!r} needs 'base' and 'discriminator'")
            branches = {}
            for val, spec in e.get("data", {}).items():
                if isinstance(spec, dict):
                    spec = spec["type"]
                branches[val] = spec
            self._define(name, Union(name, base, e["discriminator"], branches, line), where)
        elif kind == "alternate":
            choices = {}
            for cname, spec in e.get("data", {}).items():
                if isinstance(spec, dict):
                    spec = spec["type"]
                choices[cname] = spec
            self._define(name, Alternate(name, choices, line), where)
        elif kind == "command":
            self.commands[name] = e
        elif kind == "event":
            self.events[name] = e

    # -- queries --

    def struct(self, name):
        t = self.types.get(name)
        return t if isinstance(t, Struct) else None

    def enum(self, name):
        t = self.types.get(name)
        return t if isinstance(t, Enum) else None

    def members(self, name):
        """All members of a struct, its bases' first, as {name: Member}."""
        chain = []
        seen = set()
        while name is not None:
            if name in seen:
                raise SchemaError(f"base cycle at {name!r}")
            seen.add(name)
            s = self.struct(name)
            if s is None:
                raise SchemaError(f"{name!r} is not a struct this schema defines")
            chain.append(s)
            name = s.base
        out = {}
        for s in reversed(chain):
            for m in s.own_members:
                out[m.name] = m
        return out

    def command_returns(self, name):
        c = self.commands.get(name)
        return c.get("returns") if c else None

    def undefined_types(self):
        """Type names used by some definition but defined nowhere (they come
        from files this schema includes but which were not read)."""
        used = set()

        def use(spec):
            if isinstance(spec, list):
                spec = spec[0]
            if isinstance(spec, str):
                used.add(spec)
        for t in self.types.values():
            if isinstance(t, Struct):
                for m in t.own_members:
                    use(m.type)
                use(t.base)
            elif isinstance(t, Union):
                use(t.base)
                for v in t.branches.values():
                    use(v)
            elif isinstance(t, Alternate):
                for v in t.choices.values():
                    use(v)
        return sorted(u for u in used if u and u not in self.types and u not in BUILTIN_TYPES)


# ---- validation -----------------------------------------------------------

def describe(value):
    if isinstance(value, bool):
        return f"bool {json_repr(value)}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if value is None:
        return "null"
    if isinstance(value, list):
        return f"array of {len(value)}"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def json_repr(v):
    return {True: "true", False: "false"}.get(v, repr(v)) if isinstance(v, bool) else repr(v)


def _type_str(spec):
    return f"[{spec[0]}]" if isinstance(spec, list) else str(spec)


def _extension_for(extensions, type_name, member):
    """The extension spec allowing `member` in `type_name`, or None.
    extensions: {type name or '*': {member name or 'prefix*': spec}} where
    spec is a QAPI type spec ('uint64', ['T']) or a callable(value, path)
    returning a list of errors."""
    if not extensions:
        return None
    for tname in (type_name, "*"):
        table = extensions.get(tname) or {}
        if member in table:
            return table[member]
        for key, spec in table.items():
            if key.endswith("*") and member.startswith(key[:-1]):
                return spec
    return None


def validate(value, type_name, schema, path="$", extensions=None):
    """Errors (list of str) found checking `value`, a decoded JSON value,
    against QAPI type `type_name` (a name, or ['T'] for an array)."""
    errors = []
    _validate(value, type_name, schema, path, extensions, errors)
    return errors


def _validate(value, spec, schema, path, ext, errors):
    if isinstance(spec, list):
        if not isinstance(value, list):
            errors.append(f"{path}: expected array [{spec[0]}], got {describe(value)}")
            return
        for i, v in enumerate(value):
            _validate(v, spec[0], schema, f"{path}[{i}]", ext, errors)
        return
    if callable(spec):
        errors.extend(spec(value, path))
        return

    if spec in BUILTIN_INT_RANGES:
        lo, hi = BUILTIN_INT_RANGES[spec]
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected {spec}, got {describe(value)}")
        elif not lo <= value <= hi:
            errors.append(f"{path}: {spec} out of range [{lo}, {hi}]: {value}")
        return
    if spec == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: expected number, got {describe(value)}")
        elif isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{path}: number is not finite (not valid JSON): {value!r}")
        return
    if spec == "str":
        if not isinstance(value, str):
            errors.append(f"{path}: expected str, got {describe(value)}")
        return
    if spec == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected bool, got {describe(value)}")
        return
    if spec == "null":
        if value is not None:
            errors.append(f"{path}: expected null, got {describe(value)}")
        return
    if spec == "any":
        return
    if spec == "QType":
        if value not in ("none", "qnull", "qnum", "qstring", "qdict", "qlist", "qbool"):
            errors.append(f"{path}: expected QType, got {describe(value)}")
        return

    t = schema.types.get(spec)
    if t is None:
        hint = f" (the schema includes {', '.join(schema.includes)}, which were not read)" \
            if schema.includes else ""
        errors.append(f"{path}: type {spec!r} is not defined in the schema{hint}: "
                      f"can not validate {describe(value)}")
        return
    if isinstance(t, Enum):
        if not isinstance(value, str):
            errors.append(f"{path}: expected {spec} (enum), got {describe(value)}")
        elif value not in t.values:
            errors.append(f"{path}: {value!r} is not a value of enum {spec} {t.values}")
        return
    if isinstance(t, Struct):
        _validate_object(value, spec, schema.members(spec), schema, path, ext, errors)
        return
    if isinstance(t, Union):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected {spec} (object), got {describe(value)}")
            return
        members = dict(schema.members(t.base))
        disc = value.get(t.discriminator)
        branch = t.branches.get(disc) if isinstance(disc, str) else None
        if branch is not None:
            members.update(schema.members(branch))
        _validate_object(value, spec, members, schema, path, ext, errors)
        return
    if isinstance(t, Alternate):
        attempts = []
        for cname, cspec in t.choices.items():
            sub = validate(value, cspec, schema, path, ext)
            if not sub:
                return
            attempts.append(f"{cname}: {sub[0]}")
        errors.append(f"{path}: matches no branch of alternate {spec}: " + "; ".join(attempts))
        return
    errors.append(f"{path}: can not validate against {spec!r}")


def _validate_object(value, type_name, members, schema, path, ext, errors):
    if not isinstance(value, dict):
        errors.append(f"{path}: expected {type_name} (object), got {describe(value)}")
        return
    for name, m in members.items():
        if name not in value:
            if not m.optional:
                errors.append(f"{path}: required member {name!r} ({_type_str(m.type)}) "
                              f"of {type_name} is missing")
            continue
        _validate(value[name], m.type, schema, f"{path}.{name}", ext, errors)
    for name, v in value.items():
        if name in members:
            continue
        spec = _extension_for(ext, type_name, name)
        if spec is None:
            errors.append(f"{path}: member {name!r} ({describe(v)}) is not declared by {type_name} "
                          f"and is not an allowed extension")
            continue
        _validate(v, spec, schema, f"{path}.{name}", ext, errors)


def opaque_extension(value, path):
    """For extensions whose contents are not ours to check: any JSON value
    but null (kmig's x-kmig-* members are objects, scalars and arrays)."""
    if value is None:
        return [f"{path}: extension member must be a JSON object or scalar, got {describe(value)}"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path}: number is not finite (not valid JSON): {value!r}"]
    return []
