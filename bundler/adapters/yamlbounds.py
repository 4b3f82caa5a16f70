"""A ``yaml.SafeLoader`` that refuses documents whose tree is far larger than their text.

YAML aliases share one node between many places, so a few hundred bytes (``a: &a [x, x]``,
``b: &b [*a, *a]``, ...) describe billions of nodes once anything walks, prints or serialises
the loaded value ("billion laughs"); merge keys (``<<: [*a, *a]``) expand the same way while
loading. Deep nesting exhausts Python's recursion limit. This loader checks the composed node
graph before a single value is constructed: at most :data:`MAX_DEPTH` levels of nesting, and
aliases may add at most :data:`MAX_ALIAS_NODES` nodes beyond the ones written out (go-yaml,
which Helm uses, likewise refuses excessive aliasing). Violations are ``yaml.YAMLError``s, so
callers report them as they report any other malformed YAML.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError

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
