"""The admin key: from STUDIO_ADMIN_KEY, or generated once into a 0600 file in the data directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from studio.config import Settings
from studio.domain.keys import generate_key, hash_key

ADMIN_KEY_FILE = "admin_key"


@dataclass(frozen=True, slots=True)
class AdminKey:
    key_hash: str
    path: Path | None
    # Set only by the call that generated the key, so it is printed once.
    new_secret: str | None = None


def resolve_admin_key(settings: Settings) -> AdminKey:
    """Return the admin key's hash, generating and saving a key on first start when none is set."""
    if settings.admin_key is not None:
        return AdminKey(key_hash=hash_key(settings.admin_key.get_secret_value()), path=None)
    path = settings.data_dir / ADMIN_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    new = generate_key()
    try:
        # O_EXCL: two processes starting at once cannot both create it; the loser reads the winner's.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return AdminKey(key_hash=hash_key(path.read_text().strip()), path=path)
    with os.fdopen(fd, "w") as file:
        file.write(new.secret + "\n")
    return AdminKey(key_hash=new.key_hash, path=path, new_secret=new.secret)
