"""One JSON schema per block class.

Prefect's `Block.save` asks for the class's JSON schema once for every field it
dumps (`Block._field_has_secrets`), and pydantic builds it anew each time: 159
builds, 0.6 s of CPU, per save of the 50-field ReleaseTarget. A class's schema
never changes while the process runs, so ours is built once and each caller gets
a copy of its own (Prefect's callers change theirs).
"""

import copy

_SCHEMAS: dict[tuple, dict] = {}


class CachedSchema:
    """Put before `Block` in a block class's bases."""

    @classmethod
    def model_json_schema(cls, *args, **kwargs) -> dict:
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in _SCHEMAS:
            _SCHEMAS[key] = super().model_json_schema(*args, **kwargs)
        return copy.deepcopy(_SCHEMAS[key])
