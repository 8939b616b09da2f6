"""``Fields``: a class whose instances are pytrees of named attributes.

The attributes named in ``data_fields`` are the leaves (arrays, nested pytrees); those named
in ``static_fields`` are the static part and must be hashable; any other attribute is
host-side only and is dropped when flattening (it is not there after ``jit`` rebuilds the
object). Subclasses are registered with JAX automatically.
"""

from __future__ import annotations

import jax


class Fields:
    data_fields: tuple[str, ...] = ()
    static_fields: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node_class(cls)

    def tree_flatten(self):
        return (tuple(getattr(self, f) for f in self.data_fields),
                tuple(getattr(self, f) for f in self.static_fields))

    @classmethod
    def tree_unflatten(cls, static, data):
        obj = object.__new__(cls)
        obj.__dict__.update(zip(cls.static_fields, static))
        obj.__dict__.update(zip(cls.data_fields, data))
        return obj
