"""A compiled Avro binary reader for Foresight's schemas: the records fastavro reads, faster.

fastavro reads every value through the file object: a FeatureVector of 352 doubles took
60 µs, a PredictionBatch of 41 predictions 72 µs. :func:`compile_reader` writes, once per
schema, Python source that reads a record of that schema straight from its bytes, each field
inline, and compiles it (``exec``): closures calling one another for each value, like
:mod:`schemas.avro_writer`'s, were no faster than fastavro on records of short arrays. A
block of doubles is one unpack, a block of small ints or enum symbols one lookup per byte.
The records are fastavro's: dicts, lists, ``str``, ``bytes``, ``int`` (timestamps too),
``float``, ``bool``, ``None``, enum symbols as ``str``.

Hostile bytes raise :class:`CorruptBodyError`, naming the field and what was wrong: a body
that ends early, a negative or oversized length or count, a varint over 10 bytes or 64 bits,
an enum or union index out of range, a boolean byte other than 0 or 1, invalid UTF-8. A count
is checked against the bytes left before anything is allocated, at one byte an item at least
(eight for doubles), so an array of nulls cannot hold more items than there are bytes left.
fastavro accepts some of those (a boolean byte of 2, an index of -1 counted from the end, a
varint past 64 bits, wrapped): this reader refuses them.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Reader = Callable[[bytes, int], tuple[dict[str, Any], int]]

_DOUBLE = struct.Struct("<d").unpack_from
_FLOAT = struct.Struct("<f").unpack_from
# The value of each one-byte varint (0x00 to 0x7f): zigzag, so 0, -1, 1, -2...
_SMALL = tuple((b >> 1) ^ -(b & 1) for b in range(0x80))
# Arrays of strings read before, per array of a schema: the bytes that key one (its first),
# the longest kept (in bytes and in strings), and how many are kept (all are dropped when
# full: a stream's arrays repeat, or nothing does). A kept array holds at most 8 KiB and
# 256 string objects (about 23 KB at worst), so an array's cache stays under 6 MB whatever
# a hostile stream sends.
_SEEN_KEY_BYTES = 48
_SEEN_MAX_BYTES = 8192
_SEEN_MAX_STRINGS = 256
_SEEN_ARRAYS = 256
# Unpackers of short blocks of doubles, by count: quicker than numpy for short blocks.
_DOUBLE_BLOCKS = tuple(struct.Struct(f"<{n}d").unpack_from for n in range(64))


class CorruptBodyError(ValueError):
    """An Avro body that does not decode under its schema: where (``field``, dotted through
    nested records; empty for the record itself) and what was wrong (``reason``)."""

    def __init__(self, reason: str, field: str = "") -> None:
        super().__init__(f"field {field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


def _varints(data: bytes, pos: int, count: int) -> tuple[list[int], int]:
    """``count`` of Avro's zigzag varints from ``pos``, and the position after them."""
    values = []
    for _ in range(count):
        start = pos
        n = 0
        shift = 0
        while True:
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 63:
                raise CorruptBodyError(f"the varint at byte {start} runs past 10 bytes")
        if n >> 64:
            raise CorruptBodyError(f"the varint at byte {start} does not fit 64 bits")
        values.append((n >> 1) ^ -(n & 1))
    return values, pos


def _long(data: bytes, pos: int) -> tuple[int, int]:
    """One varint at ``pos``, and the position after it."""
    values, pos = _varints(data, pos, 1)
    return values[0], pos


def _symbols(indices: list[int], symbols: tuple[str, ...]) -> list[str]:
    """The enum symbols at ``indices``, checked."""
    if min(indices) < 0 or max(indices) >= len(symbols):
        wrong = next(i for i in indices if not 0 <= i < len(symbols))
        raise CorruptBodyError(f"enum index {wrong} of {len(symbols)} symbols")
    return list(map(symbols.__getitem__, indices))


def _block(data: bytes, pos: int) -> tuple[int, int]:
    """The item count of the array or map block at ``pos`` (0 ends it), and where its items
    start: a negative count is followed by the block's size in bytes, not needed here."""
    count, pos = _long(data, pos)
    if count < 0:
        count = -count
        _, pos = _long(data, pos)
    return count, pos


def _left(what: str, pos: int, size: int) -> CorruptBodyError:
    return CorruptBodyError(f"{what} at byte {pos}, with {size - pos} bytes left")


def _doubles(data: bytes, pos: int, count: int) -> Sequence[float]:
    if count < len(_DOUBLE_BLOCKS):
        return _DOUBLE_BLOCKS[count](data, pos)
    values: list[float] = np.frombuffer(data, "<f8", count, pos).tolist()
    return values


def _corrupt(error: Exception, field: str) -> CorruptBodyError:
    """``error``, raised while reading ``field``, as a :class:`CorruptBodyError`."""
    if isinstance(error, CorruptBodyError):
        return CorruptBodyError(error.reason, f"{field}.{error.field}" if error.field else field)
    if isinstance(error, UnicodeDecodeError):
        return CorruptBodyError(f"not UTF-8: {error.reason} at its byte {error.start}", field)
    return CorruptBodyError("the body ends inside it", field)  # IndexError, struct.error


def compile_reader(schema: Mapping[str, Any]) -> Reader:
    """A function reading a record of ``schema`` (a parsed-JSON Avro record schema) from
    bytes at a position, returning it and the position after it; raises
    :class:`CorruptBodyError`.

    >>> read = compile_reader({"type": "record", "name": "R", "fields": [
    ...     {"name": "values", "type": {"type": "array", "items": "double"}}]})
    >>> read(b"\\x04" + bytes(8) + bytes.fromhex("000000000000f83f") + b"\\x00", 0)
    ({'values': [0.0, 1.5]}, 18)
    >>> try:
    ...     read(b"\\x04" + bytes(8), 0)
    ... except CorruptBodyError as error:
    ...     print(error)
    field values: a block of 2 items at byte 1, with 8 bytes left
    """
    if schema.get("type") != "record":
        raise ValueError(f"the Avro reader reads records, not {schema.get('type')!r}")
    source = _Source()
    entry = source.record(schema, schema.get("namespace", ""))
    namespace = dict(source.constants)
    exec(compile("\n".join(source.functions), f"<avro reader {schema['name']}>", "exec"), namespace)
    reader: Reader = namespace[entry]
    return reader


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


class _Source:
    """The source of one function per record type of a schema, and the constants it uses.

    Each ``_value`` method gives the lines that read one value of a type into a local
    variable, ``data`` being the bytes, ``pos`` the position (moved past the value) and
    ``size`` the length; ``b`` is a scratch byte.
    """

    def __init__(self) -> None:
        self.functions: list[str] = []
        self.constants: dict[str, Any] = {
            "CorruptBodyError": CorruptBodyError,
            "_ERRORS": (CorruptBodyError, IndexError, struct.error, UnicodeDecodeError),
            **{f.__name__: f for f in (_long, _varints, _symbols, _block, _left, _doubles)},
            "_corrupt": _corrupt,
            **{"_SMALL": _SMALL, "_DOUBLE": _DOUBLE, "_FLOAT": _FLOAT},
        }
        # Named types: a record's function name, or an enum's symbols.
        self.named: dict[str, str | tuple[str, ...]] = {}
        self._ids = itertools.count()

    def _local(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def _constant(self, value: Any) -> str:
        name = self._local("_k")
        self.constants[name] = value
        return name

    def record(self, schema: Mapping[str, Any], namespace: str) -> str:
        """Writes the function reading a record of ``schema``; its name."""
        namespace = schema.get("namespace", namespace)
        function = self._local("_record")
        full = _full_name(schema["name"], namespace)
        self.named[full] = self.named[schema["name"]] = function  # fields may refer to it
        body: list[str] = []
        built: list[str] = []
        for field in schema["fields"]:
            target = self._local("v")
            body += [f"field = {field['name']!r}", *self._value(field["type"], target, namespace)]
            built.append(f"{field['name']!r}: {target}")
        self.functions.append(
            "\n".join(
                [
                    f"def {function}(data, pos):",
                    "    size = len(data)",
                    "    field = ''",
                    "    try:",
                    *_indent(_indent(body or ["pass"])),
                    "    except _ERRORS as error:",
                    "        raise _corrupt(error, field) from error",
                    f"    return {{{', '.join(built)}}}, pos",
                ]
            )
        )
        return function

    def _value(self, schema: Any, target: str, namespace: str) -> list[str]:
        if isinstance(schema, list):
            return self._union(schema, target, namespace)
        kind = schema["type"] if isinstance(schema, Mapping) else schema
        if kind in ("int", "long"):  # a timestamp's logical type too: an int
            return self._varint(target)
        if kind in ("string", "bytes"):
            return self._text(target, decode=kind == "string")
        if kind in _FIXED_SIZE:
            return _FIXED_SIZE[kind](target)
        if kind == "record":
            return [f"{target}, pos = {self.record(schema, namespace)}(data, pos)"]
        if kind == "enum":
            return self._enum(self._define_enum(schema, namespace), target)
        if kind == "array":
            return self._array(schema["items"], target, namespace)
        if kind == "map":
            return self._map(schema["values"], target, namespace)
        if isinstance(kind, str):  # a named type defined before
            found = self._lookup(kind, namespace)
            if isinstance(found, str):
                return [f"{target}, pos = {found}(data, pos)"]
            return self._enum(found, target)
        raise ValueError(f"the Avro reader does not know type {kind!r}")

    def _lookup(self, name: str, namespace: str) -> str | tuple[str, ...]:
        found = self.named.get(_full_name(name, namespace), self.named.get(name))
        if found is None:
            raise ValueError(f"unknown named type {name!r}")
        return found

    def _define_enum(self, schema: Mapping[str, Any], namespace: str) -> tuple[str, ...]:
        symbols = tuple(schema["symbols"])
        full = _full_name(schema["name"], schema.get("namespace", namespace))
        self.named[full] = self.named[schema["name"]] = symbols
        return symbols

    def _varint(self, target: str) -> list[str]:
        return [
            "b = data[pos]",
            "if b < 0x80:",
            f"    {target} = _SMALL[b]",
            "    pos += 1",
            "else:",
            f"    {target}, pos = _long(data, pos)",
        ]

    def _text(self, target: str, decode: bool) -> list[str]:
        n = self._local("n")
        return [
            "b = data[pos]",
            "if b & 0x81:",  # a negative length, or one of more than a byte
            f"    {n}, pos = _long(data, pos)",
            "else:",
            f"    {n} = b >> 1",
            "    pos += 1",
            f"if not 0 <= {n} <= size - pos:",
            f"    raise _left(f'a length of {{{n}}}', pos, size)",
            f"{target} = data[pos:pos + {n}]{'.decode()' if decode else ''}",
            f"pos += {n}",
        ]

    def _enum(self, symbols: tuple[str, ...], target: str) -> list[str]:
        index = self._local("i")
        return [
            *self._varint(index),
            f"if not 0 <= {index} < {len(symbols)}:",
            f"    raise CorruptBodyError(f'enum index {{{index}}} of {len(symbols)} symbols')",
            f"{target} = {self._constant(symbols)}[{index}]",
        ]

    def _union(self, branches: list[Any], target: str, namespace: str) -> list[str]:
        index = self._local("i")
        lines = self._varint(index)
        for i, branch in enumerate(branches):
            lines.append(f"{'if' if i == 0 else 'elif'} {index} == {i}:")
            lines += _indent(self._value(branch, target, namespace))
        return [
            *lines,
            "else:",
            f"    raise CorruptBodyError(f'union branch {{{index}}} of {len(branches)}')",
        ]

    def _blocks(
        self, target: str, empty: str, least: int, block: Callable[[str], list[str]]
    ) -> list[str]:
        """Reads an array or map into ``target`` (starting as ``empty``) a block at a time,
        each block's items by the lines ``block`` gives for the name of their count."""
        count = self._local("c")
        return [
            f"{target} = {empty}",
            "while True:",
            "    b = data[pos]",
            "    if b & 0x81:",  # a negative count, or one of more than a byte
            f"        {count}, pos = _block(data, pos)",
            "    else:",
            f"        {count} = b >> 1",
            "        pos += 1",
            f"    if not {count}:",
            "        break",
            f"    if {count} * {least} > size - pos:",
            f"        raise _left(f'a block of {{{count}}} items', pos, size)",
            *_indent(block(count)),
        ]

    def _array(self, items: Any, target: str, namespace: str) -> list[str]:
        if items == "double":
            return self._blocks(
                target,
                "[]",
                8,
                lambda c: [f"{target} += _doubles(data, pos, {c})", f"pos += 8 * {c}"],
            )
        symbols = self._symbols(items, namespace)
        if items not in ("int", "long") and symbols is None:
            item = self._local("x")
            read_item = [*self._value(items, item, namespace), f"{target}.append({item})"]
            read = self._blocks(
                target, "[]", 1, lambda c: [f"for _ in range({c}):", *_indent(read_item)]
            )
            return self._seen(target, read) if items == "string" else read
        found = self._local("found")
        add = found if symbols is None else f"_symbols({found}, {self._constant(symbols)})"
        return self._blocks(
            target,
            "[]",
            1,
            lambda c: [
                f"chunk = data[pos:pos + {c}]",
                "if max(chunk) < 0x80:",  # one-byte varints, the common case, at once
                f"    {found} = list(map(_SMALL.__getitem__, chunk))",
                f"    pos += {c}",
                "else:",
                f"    {found}, pos = _varints(data, pos, {c})",
                f"{target} += {add}",
            ],
        )

    def _seen(self, target: str, read: list[str]) -> list[str]:
        """``read`` (the lines reading an array of strings into ``target``) behind a cache of
        the arrays read before, by their bytes: a stream's records repeat the same names
        (an entity's metrics, a fleet's), and a copy of the list read before is several
        times quicker than reading each string again. Only bytes equal to a cached array's
        whole encoding get its list, so the answer is the one reading would give."""
        seen, start, key, hit = (
            self._constant({}), self._local("start"), self._local("key"), self._local("hit")
        )  # fmt: skip
        return [
            f"{key} = data[pos:pos + {_SEEN_KEY_BYTES}]",
            f"{hit} = {seen}.get({key})",
            f"if {hit} is not None and data.startswith({hit}[0], pos):",
            f"    {target} = list({hit}[1])",
            f"    pos += len({hit}[0])",
            "else:",
            f"    {start} = pos",
            *_indent(read),
            # Keyed by its own first bytes; small enough to keep.
            f"    if {_SEEN_KEY_BYTES} <= pos - {start} <= {_SEEN_MAX_BYTES}"
            f" and len({target}) <= {_SEEN_MAX_STRINGS}:",
            f"        if len({seen}) >= {_SEEN_ARRAYS}:",
            f"            {seen}.clear()",
            f"        {seen}[{key}] = (data[{start}:pos], tuple({target}))",
        ]

    def _symbols(self, items: Any, namespace: str) -> tuple[str, ...] | None:
        """The symbols of an array's items when they are an enum's; None otherwise."""
        if isinstance(items, Mapping) and items.get("type") == "enum":
            return self._define_enum(items, namespace)
        if not isinstance(items, str) or items in _PRIMITIVES:
            return None
        found = self._lookup(items, namespace)
        return None if isinstance(found, str) else found  # a record's function, or symbols

    def _map(self, values: Any, target: str, namespace: str) -> list[str]:
        key, value = self._local("key"), self._local("x")
        read_entry = [
            *self._text(key, decode=True),
            *self._value(values, value, namespace),
            f"{target}[{key}] = {value}",
        ]
        return self._blocks(
            target, "{}", 1, lambda c: [f"for _ in range({c}):", *_indent(read_entry)]
        )


_FIXED_SIZE: dict[str, Callable[[str], list[str]]] = {
    "null": lambda target: [f"{target} = None"],
    "boolean": lambda target: [
        "b = data[pos]",
        "if b > 1:",
        "    raise CorruptBodyError(f'a boolean byte of {b} at byte {pos}')",
        f"{target} = b == 1",
        "pos += 1",
    ],
    "double": lambda target: [f"{target} = _DOUBLE(data, pos)[0]", "pos += 8"],
    "float": lambda target: [f"{target} = _FLOAT(data, pos)[0]", "pos += 4"],
}
_PRIMITIVES = {*_FIXED_SIZE, "int", "long", "string", "bytes"}
