"""Sweeps: the spec file and its cost (`planning/`), the driver that runs a sweep (`driver/`),
and what a sweep leaves behind, its folder and tracking store (`store/`); the YAML specs beside.

A sweep started before the rooms pickled its Tune callbacks, folder and spec functions under
the old module paths (`sweeps.callback`, ...: tuner.pkl, Tune's trial and searcher state); an
import of an old path gives the module it became, so such a sweep still reads and resumes."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

ROOMS = {
    "planning": ("spec", "plan", "cost"),
    "store": ("folder", "locations", "status", "reconcile", "parent", "tracking", "outbox",
              "ledger", "portable", "lock"),
    "driver": ("runner", "tuner", "trainable", "callback", "console", "stopping"),
}  # fmt: skip
MOVED = {f"sweeps.{m}": f"sweeps.{room}.{m}" for room, mods in ROOMS.items() for m in mods}


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass  # the module it became ran already


if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
    sys.meta_path.insert(0, _OldPaths())
