"""The map's caches for one Engine (`engine.map_cache`, beside the atlas): the layout per file version (or built in
memory for a small SAE pair), the hover table, and the last few base figures. State on the Engine, never in a
module: each replica and each test engine keeps its own, and a new Engine starts empty."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

MAX_FIGURES = 6  # base maps in different colourings (18k points each: ~0.3 s to build, ~1 MB)


@dataclass
class MapCache:
    layouts: dict = field(default_factory=dict)  # key -> (Layout | None, status line)
    table: tuple | None = None  # (key, point table) of the current layout and atlas
    figures: OrderedDict = field(default_factory=OrderedDict)  # key -> figure dict, least recently used first
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    build_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def built(self, key, build: Callable[[], tuple]) -> tuple:
        """The layout built in memory once for this key (a small SAE pair's map: nothing written)."""
        with self.build_lock:
            if key not in self.layouts:
                self.layouts[key] = build()
            return self.layouts[key]

    def loaded(self, key, load: Callable[[], tuple]) -> tuple:
        """The layout loaded once per file version (key); older file versions are dropped, built ones kept."""
        with self.lock:
            if key not in self.layouts:
                got = load()
                for k in [k for k in self.layouts if k[0] != "memory"]:
                    del self.layouts[k]
                self.layouts[key] = got
            return self.layouts[key]

    def point_table(self, key, make: Callable[[], Any]) -> Any:
        """The hover table of the current layout and atlas (one kept)."""
        with self.lock:
            if self.table is None or self.table[0] != key:
                self.table = (key, make())
            return self.table[1]

    def figure(self, key, make: Callable[[], dict]) -> dict:
        """A base map in one colouring, the last MAX_FIGURES kept (built outside the lock)."""
        with self.lock:
            if key in self.figures:
                self.figures.move_to_end(key)
                return self.figures[key]
        fig = make()
        with self.lock:
            self.figures[key] = fig
            while len(self.figures) > MAX_FIGURES:
                self.figures.popitem(last=False)
        return fig
