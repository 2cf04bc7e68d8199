"""A model-score cache stored in the DuckDB warehouse, keyed by a content hash of the scored input.

Stage 2 keys each directed NLI pair by ``filters.consistency.pair_cache_key`` (a hash of the model
name and both texts), so a rerun or a new round scores only pairs it has not seen. Lookups read
the table under ``Warehouse.connect()``. New scores stay in memory until ``flush`` writes them all
in one transaction, so a failed run leaves the table unchanged.
"""

import logging
from collections.abc import Iterable, Iterator, MutableMapping

import polars as pl

from pipelines.warehouse import Warehouse

log = logging.getLogger(__name__)

SCORE_CACHE_TABLE = "nli_score_cache"

_DDL = """
CREATE TABLE IF NOT EXISTS "{table}" (
    key VARCHAR PRIMARY KEY, score DOUBLE NOT NULL, written_at TIMESTAMP
)
"""


class WarehouseScoreCache(MutableMapping[str, float]):
    """A ``MutableMapping[str, float]`` backed by one warehouse table, written back by ``flush``.

    Values read once are kept in memory. ``prefetch`` loads many keys with one query, so callers
    that score in batches should call it first. A plain ``get`` of an unseen key costs one query.
    Deletions and writes are held until ``flush``.
    """

    def __init__(self, warehouse: Warehouse, table: str = SCORE_CACHE_TABLE):
        if not table.replace("_", "").isalnum():
            raise ValueError(f"table name {table!r} is invalid; use letters, digits and underscores")
        self.warehouse = warehouse
        self.table = table
        self._known: dict[str, float] = {}
        self._absent: set[str] = set()
        self._pending: dict[str, float] = {}
        self._deleted: set[str] = set()
        self.hits = 0  # lookups that found a stored or pending score
        self.misses = 0  # lookups of keys with no stored score

    def _ensure_table(self, con) -> None:
        con.execute(_DDL.format(table=self.table))

    def prefetch(self, keys: Iterable[str]) -> int:
        """Load the stored scores of ``keys`` not yet in memory with one query; return how many were found."""
        wanted = sorted({k for k in keys if k not in self._known and k not in self._absent and k not in self._pending})
        if not wanted:
            return 0
        with self.warehouse.connect() as con:
            self._ensure_table(con)
            con.register("wanted_keys", pl.DataFrame({"key": wanted}).to_arrow())
            found = con.execute(
                f'SELECT c.key, c.score FROM "{self.table}" c JOIN wanted_keys w USING (key)'
            ).fetchall()
            con.unregister("wanted_keys")
        for key, score in found:
            if key not in self._deleted:
                self._known[key] = float(score)
        self._absent.update(set(wanted) - self._known.keys())
        return len(found)

    def __getitem__(self, key: str) -> float:
        if key in self._pending:
            self.hits += 1
            return self._pending[key]
        if key not in self._deleted and key not in self._known and key not in self._absent:
            self.prefetch([key])
        if key in self._known and key not in self._deleted:
            self.hits += 1
            return self._known[key]
        self.misses += 1
        raise KeyError(key)

    def __setitem__(self, key: str, value: float) -> None:
        self._pending[key] = float(value)
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._pending.pop(key, None)
        self._known.pop(key, None)
        self._deleted.add(key)

    def _stored_keys(self) -> list[str]:
        with self.warehouse.connect() as con:
            self._ensure_table(con)
            return [row[0] for row in con.execute(f'SELECT key FROM "{self.table}"').fetchall()]

    def __iter__(self) -> Iterator[str]:
        stored = [k for k in self._stored_keys() if k not in self._deleted and k not in self._pending]
        return iter(stored + list(self._pending))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def pending(self) -> int:
        """Number of scores written since the last ``flush``."""
        return len(self._pending)

    def flush(self) -> int:
        """Write pending scores and deletions in one transaction; return the number of scores written."""
        if not self._pending and not self._deleted:
            return 0
        frame = pl.DataFrame(
            {"key": list(self._pending), "score": list(self._pending.values())},
            schema={"key": pl.String, "score": pl.Float64},
        )
        removed = pl.DataFrame({"key": sorted(self._deleted | self._pending.keys())}, schema={"key": pl.String})

        with self.warehouse.connect() as con:
            self._ensure_table(con)
            con.register("incoming_scores", frame.to_arrow())
            con.register("removed_keys", removed.to_arrow())
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f'DELETE FROM "{self.table}" WHERE key IN (SELECT key FROM removed_keys)')
                con.execute(
                    f'INSERT INTO "{self.table}" SELECT key, score, now()::TIMESTAMP FROM incoming_scores'
                )
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("incoming_scores")
                con.unregister("removed_keys")

        written = len(self._pending)
        self._absent.update(self._deleted - self._pending.keys())
        self._known.update(self._pending)
        self._absent.difference_update(self._pending)
        self._pending.clear()
        self._deleted.clear()
        log.info("wrote %d scores to warehouse table %s", written, self.table)
        return written
