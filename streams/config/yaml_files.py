"""YAML files people write (the config, destinations, replay mappings): safe tags only,
and no alias bombs."""

from __future__ import annotations

import yaml

# Values a file may expand to once its aliases are followed. A real config has a few
# thousand; 700 bytes of nested aliases expand to a billion.
MAX_VALUES = 100_000


class TooManyValues(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark | None) -> None:
        super().__init__(
            f"its aliases expand to more than {MAX_VALUES:,} values; write the values out "
            "instead of nesting aliases"
        )
        self.problem_mark = mark


def load_yaml(text: str) -> tuple[object, yaml.Node | None]:
    """The document in `text` and its node tree (for line numbers), refusing a document
    whose aliases expand beyond MAX_VALUES before anything walks the expansion."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _expanded_size(node, {})
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for with its aliases followed; an alias is the same
    node object, so each is sized once."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    if size > MAX_VALUES:
        raise TooManyValues(node.start_mark)
    sizes[id(node)] = size
    return size
