"""A ``yaml.SafeLoader`` that refuses documents whose tree is far larger than their text.

YAML aliases share one node between many places, so a few hundred bytes (``a: &a [x, x]``,
``b: &b [*a, *a]``, ...) describe billions of nodes once anything walks, prints or serialises
the loaded value ("billion laughs"); merge keys (``<<: [*a, *a]``) expand the same way while
loading. Deep nesting exhausts Python's recursion limit. This loader checks the composed node
graph before a single value is constructed: at most :data:`MAX_DEPTH` levels of nesting, and
aliases may add at most :data:`MAX_ALIAS_NODES` nodes beyond the ones written out (go-yaml,
which Helm uses, likewise refuses excessive aliasing). Violations are ``yaml.YAMLError``s, so
callers report them as they report any other malformed YAML.

:class:`UniqueKeySafeLoader` also refuses a mapping that names one key twice (PyYAML keeps the
last value silently): bundler's own files, the trust policy and the bundle config, use it, so
that a second ``require:`` cannot quietly replace the first. Rendered templates are not read
with it: Helm (4.1, through sigs.k8s.io/yaml's non-strict unmarshal) accepts duplicate keys in
chart files and keeps the last value, as PyYAML does.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

MAX_DEPTH = 100
MAX_ALIAS_NODES = 500_000


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that aliases expand beyond the bound, or that contains itself."""
    sizes: dict[int, int] = {}
    state: dict[int, bool] = {}  # False: children pending, True: size known
    stack = [root]
    while stack:
        node = stack[-1]
        key = id(node)
        done = state.get(key)
        if done is None:
            state[key] = False
            for child in _children(node):
                child_state = state.get(id(child))
                if child_state is False:
                    raise ComposerError(
                        None,
                        None,
                        "an alias refers to a node that contains it",
                        child.start_mark,
                    )
                if child_state is None:
                    stack.append(child)
        else:
            stack.pop()
            if not done:
                sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
                state[key] = True
    if sizes[id(root)] - len(sizes) > MAX_ALIAS_NODES:
        raise ComposerError(
            None,
            None,
            f"aliases expand the document to {sizes[id(root)]} nodes from {len(sizes)} "
            f"written ones, more than {MAX_ALIAS_NODES} extra (YAML alias bomb?)",
            root.start_mark,
        )


class BoundedSafeLoader(yaml.SafeLoader):
    """``safe_load`` semantics, with nesting and alias expansion bounded (see the module)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node; ComposerError past ``MAX_DEPTH`` levels of nesting."""
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        """Compose a document; ComposerError when its aliases expand it past ``MAX_ALIAS_NODES``."""
        node = super().compose_document()
        if node is not None:
            check_expansion(node)
        return node


_MERGE_TAG = "tag:yaml.org,2002:merge"


class UniqueKeySafeLoader(BoundedSafeLoader):
    """:class:`BoundedSafeLoader` that refuses a mapping naming the same key twice.

    Keys are compared as constructed values (``1`` and ``0x1`` are one key), among the keys
    written in the mapping itself; a merge key (``<<``) may still supply keys the mapping
    overrides, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Construct a mapping; ConstructorError naming the key and line of a duplicate."""
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    raise ConstructorError(
                        None, None, "a mapping key that is not a scalar", key_node.start_mark
                    ) from None
                if duplicate:
                    raise ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (a later value would silently replace the first)",
                        key_node.start_mark,
                    )
                seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping
