"""The catalog: INFaaS's metadata store of model-variants, with the indexes selection needs.

``load_catalog(path)`` reads a profile table (the DESIGN.md schema, or Proteus's
``aggregate_profiled.csv`` format) into a :class:`Catalog`. Parsing and per-cell
validation live in :mod:`infaas_core.profile_io`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from infaas_core.errors import ConfigError
from infaas_core.model import CPU, Variant


class Catalog:
    """An immutable set of variants with the indexes INFaaS keeps in its metadata store.

    - ``by_task(task)``: variants of a use case, sorted by accuracy (ascending), ties by
      batch-1 latency — INFaaS's ``gpar_acc_bin`` order.
    - ``by_model(model)``: variants of an architecture, sorted by batch-1 latency —
      INFaaS's ``<parent>-modvariants`` order.
    - ``by_batch1_latency()``: every variant, fastest first.
    - ``index(name)``: a dense integer id for array-based backends.
    """

    __slots__ = ("_by_b1", "_by_model", "_by_name", "_by_task", "_index", "source_path", "variants")

    def __init__(self, variants: Iterable[Variant], source_path: str = "") -> None:
        vs = tuple(variants)
        self.variants: tuple[Variant, ...] = vs
        self.source_path = source_path
        self._by_name: dict[str, Variant] = {}
        for v in vs:
            if v.name in self._by_name:
                raise ConfigError(f"catalog.{v.name}", "duplicate variant name")
            self._by_name[v.name] = v
        self._index = {v.name: i for i, v in enumerate(vs)}
        by_task: dict[str, list[Variant]] = {}
        by_model: dict[str, list[Variant]] = {}
        for v in vs:
            by_task.setdefault(v.task, []).append(v)
            by_model.setdefault(v.model, []).append(v)
        self._by_task = {
            k: tuple(sorted(lst, key=lambda v: (v.accuracy, v.batch1_latency_ms, v.name)))
            for k, lst in by_task.items()
        }
        self._by_model = {
            k: tuple(sorted(lst, key=lambda v: (v.batch1_latency_ms, v.name))) for k, lst in by_model.items()
        }
        self._by_b1 = tuple(sorted(vs, key=lambda v: (v.batch1_latency_ms, v.name)))

    # -- lookups -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.variants)

    def __iter__(self) -> Iterator[Variant]:
        return iter(self.variants)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Variant:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError("variant", f"unknown variant '{name}'") from None

    def index(self, name: str) -> int:
        return self._index[name]

    def by_task(self, task: str) -> tuple[Variant, ...]:
        return self._by_task.get(task, ())

    def by_model(self, model: str) -> tuple[Variant, ...]:
        return self._by_model.get(model, ())

    def by_batch1_latency(self) -> tuple[Variant, ...]:
        return self._by_b1

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_task))

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_model))

    @property
    def hardware_classes(self) -> tuple[str, ...]:
        return tuple(sorted({v.hardware for v in self.variants}))

    def latency_ms(self, variant: str, batch: int, quantile: str = "p50") -> float:
        """Latency of ``variant`` at ``batch`` (interpolated; refused past ``max_batch``)."""
        return self.get(variant).latency_ms(batch, quantile)

    def subset(self, keep: Iterable[str]) -> Catalog:
        names = set(keep)
        return Catalog((v for v in self.variants if v.name in names), self.source_path)

    def extended(self, added: Iterable[Variant]) -> Catalog:
        """A new catalog of these variants and ``added`` (this one is unchanged; a name
        already here, or twice in ``added``, raises :class:`ConfigError`). The live server
        swaps it in when a model is registered (docs/registration.md)."""
        return Catalog((*self.variants, *added), self.source_path)

    def cpu_variants(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.variants if v.hardware == CPU)


def load_catalog(path: str | Path, format: str = "auto") -> Catalog:
    """Read a profile table into a :class:`Catalog`.

    ``format``: ``auto`` (detected from the header), ``infaas`` (the DESIGN.md schema) or
    ``proteus`` (``aggregate_profiled.csv``). Bad input raises
    :class:`~infaas_core.errors.InputError` naming file, line, column and reason.
    """
    from infaas_core.profile_io import read_profile_table

    return Catalog(read_profile_table(Path(path), format=format), source_path=str(path))
