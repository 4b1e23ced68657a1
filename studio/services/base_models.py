"""The base-model registry: admin-managed entries, plus built-ins every cluster has."""

from __future__ import annotations

from studio.domain.estimate import shape_from_config
from studio.domain.ids import unix_now
from studio.domain.jobs import parse_fine_tuned_model_name
from studio.domain.limits import model_allowed
from studio.errors import Forbidden, InvalidInput, NotFound
from studio.ports import BaseModelRepository, ModelInspector
from studio.schemas.base_models import BaseModelCreate, BaseModelEntry
from studio.schemas.clients import Client
from studio.services.memo import Memo

# Entries are read by every job create and estimate; an admin's change reaches other replicas within this.
ENTRY_MEMO_S = 5.0


class BaseModelService:
    def __init__(self, *, repository: BaseModelRepository, inspector: ModelInspector) -> None:
        self._repo = repository
        self._inspector = inspector
        self._entries: Memo[str, BaseModelEntry] = Memo(ttl_s=ENTRY_MEMO_S, max_entries=1000)

    async def install_builtins(self, entries: list[BaseModelEntry]) -> None:
        """Write the built-in entries (they are part of the release, so they replace older copies)."""
        for entry in entries:
            await self._repo.put(entry)

    async def register(self, body: BaseModelCreate) -> BaseModelEntry:
        """Add or replace a base model; its shape comes from `config` or the source's `config.json`.

        Raises:
            InvalidInput: no config given or found, or one missing a field the estimate needs.
            Conflict: the name is a built-in model's.
        """
        source = body.source or body.name
        existing = await self._repo.get(body.name)
        if existing is not None and existing.builtin:
            raise InvalidInput(f"{body.name!r} is built in and cannot be replaced", param="name")
        config = body.config or await self._inspector.read_config(source)
        if config is None:
            raise InvalidInput(
                f"give the model's config.json as `config`: {source!r} is not a directory holding one",
                param="config",
                code="missing_model_config",
            )
        try:
            shape = shape_from_config(config)
        except KeyError as exc:
            raise InvalidInput(
                f"the model config lacks {exc}", param="config", code="invalid_model_config"
            ) from None
        except ValueError as exc:
            raise InvalidInput(
                f"the model config is invalid: {exc}", param="config", code="invalid_model_config"
            ) from None
        entry = BaseModelEntry(
            id=body.name,
            source=source,
            shape=shape,
            chat_template=body.chat_template,
            description=body.description,
            created_at=unix_now(),
        )
        await self._repo.put(entry)
        self._entries.discard(entry.id)
        return entry

    async def get(self, name: str) -> BaseModelEntry:
        """Raises NotFound (param `model`) for a name the registry does not know."""
        entry = self._entries.get(name) or await self._repo.get(name)
        if entry is None:
            raise NotFound(f"unknown base model {name!r}", param="model", code="model_not_found")
        self._entries.put(name, entry)
        return entry

    async def for_client(self, client: Client, name: str) -> BaseModelEntry:
        """Return the entry of a base model the client may fine-tune.

        Raises:
            InvalidInput: a fine-tuned model was named (training continues from base models only).
            Forbidden: the client's `allowed_base_models` do not include it.
            NotFound: the registry does not know it.
        """
        if parse_fine_tuned_model_name(name) is not None:
            raise InvalidInput(
                "fine-tuning a fine-tuned model is not supported yet: name its base model",
                param="model",
                code="model_not_supported",
            )
        if not model_allowed(client.limits.allowed_base_models, name):
            raise Forbidden(f"this client may not use the base model {name!r}", code="model_not_allowed")
        return await self.get(name)

    async def list(self) -> list[BaseModelEntry]:
        return await self._repo.list()

    async def delete(self, name: str) -> None:
        """Raises NotFound for an unknown model, InvalidInput for a built-in one."""
        entry = await self.get(name)
        if entry.builtin:
            raise InvalidInput(f"{name!r} is built in and cannot be deleted", param="model")
        self._entries.discard(name)
        await self._repo.delete(name)
