"""`ModelInspector` for model directories on a local or shared disk."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

CONFIG_MAX_BYTES = 1 << 20


class LocalModelInspector:
    async def read_config(self, source: str) -> dict[str, Any] | None:
        """Return `<source>/config.json` when `source` is a directory holding one, else None.

        Raises:
            InvalidInput is not raised here: a config that is not a JSON object is returned as None.
        """

        def read() -> dict[str, Any] | None:
            path = Path(source) / "config.json"
            if not path.is_absolute() or not path.is_file() or path.stat().st_size > CONFIG_MAX_BYTES:
                return None
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            return loaded if isinstance(loaded, dict) else None

        return await asyncio.to_thread(read)
