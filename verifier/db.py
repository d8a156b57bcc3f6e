"""The verifier daemon's persistent state (SQLite, WAL): event cursor, claims, challenge jobs and sent
transactions, so that a daemon killed at any moment resumes where it was and never attests twice.

Schema (version 2: version 1 plus `jobs.salt`, added in place to a version-1 file)::

    meta(key PRIMARY KEY, value)          chain id, registry address, verifier address, schema version
    blocks(number PRIMARY KEY, hash)      hashes of recently scanned blocks (reorg detection); the largest
                                          number is the event cursor
    claims(id PRIMARY KEY, kind, fields, block)
                                          claims seen in commit events (fields: the event's struct as JSON)
    jobs(challenge_id PRIMARY KEY, claim_id, opened_block, state, position, segments, verdict, reason,
         results_hash, report_cid, report, published, attempts, first_try, next_try, outcome, salt, updated)
                                          one job per challenge; `state` is one of JOB_STATES; `salt` is the
                                          commit-reveal salt, written before the commitment is sent and kept
                                          secret until the reveal
    txs(hash PRIMARY KEY, purpose, challenge_id, nonce, raw, created, state)
                                          every signed transaction, written *before* it is broadcast, so a
                                          crash between signing and sending is recovered by re-broadcasting
                                          the same bytes (same nonce, same hash) rather than signing anew

Every write is its own transaction (autocommit), so the file is consistent after a SIGKILL.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "2"

#: Job states. `new`: seen, committee not known yet; `member`: on the committee, audit to do or running;
#: `audited`: result stored, commitment to send; `committed`: our commitment is on-chain, reveal to send;
#: `attested`: our verdict is revealed on-chain, settlement to watch; `observer`: not on the committee (kept
#: only to help draw/settle); `done`: settled or closed (terminal).
JOB_STATES = ("new", "member", "audited", "committed", "attested", "observer", "done")
ACTIVE_STATES = ("new", "member", "audited", "committed", "attested", "observer")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, fields TEXT NOT NULL, block INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    challenge_id INTEGER PRIMARY KEY,
    claim_id INTEGER NOT NULL,
    opened_block INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'new',
    position INTEGER,
    segments TEXT,
    verdict TEXT,
    reason TEXT,
    results_hash TEXT,
    report_cid TEXT,
    report TEXT,
    published INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_try REAL,
    next_try REAL NOT NULL DEFAULT 0,
    outcome TEXT,
    salt TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS txs (
    hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    challenge_id INTEGER,
    nonce INTEGER NOT NULL,
    raw BLOB NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX IF NOT EXISTS txs_state ON txs(state);
"""


class StateMismatch(RuntimeError):
    """The state file belongs to another chain, registry or verifier account."""


@dataclass
class Job:
    challenge_id: int
    claim_id: int
    opened_block: int
    state: str
    position: int | None
    segments: list[int] | None
    verdict: str | None
    reason: str | None
    results_hash: str | None
    report_cid: str | None
    report: dict[str, Any] | None
    published: bool
    attempts: int
    first_try: float | None
    next_try: float
    outcome: str | None
    salt: str | None = None


@dataclass
class TxRecord:
    hash: str
    purpose: str
    challenge_id: int | None
    nonce: int
    raw: bytes
    created: float
    state: str


class StateDB:
    """Thread-safe access to the state file (one connection, one lock; the daemon's writes are tiny)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            columns = {str(r["name"]) for r in self._conn.execute("PRAGMA table_info(jobs)")}
            if "salt" not in columns:  # a version-1 state file
                self._conn.execute("ALTER TABLE jobs ADD COLUMN salt TEXT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, args).fetchall())

    # ---- meta -----------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._exec("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._exec("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def bind(self, chain_id: int, registry: str, verifier: str) -> None:
        """Ties the file to one chain, registry and account; refuses a file made for another (a daemon
        pointed at a fresh deployment must not resume stale jobs or skip blocks)."""
        want = {"schema": SCHEMA_VERSION, "chain_id": str(chain_id), "registry": registry.lower(),
                "verifier": verifier.lower()}
        for key, value in want.items():
            have = self.get_meta(key)
            if have is None:
                self.set_meta(key, value)
            elif have != value:
                raise StateMismatch(f"state file {self.path} is for {key} {have}, not {value}: use another --state")

    # ---- cursor and reorgs ----------------------------------------------------------------------------

    def cursor(self) -> int | None:
        rows = self._exec("SELECT MAX(number) AS n FROM blocks")
        n = rows[0]["n"] if rows else None
        return int(n) if n is not None else None

    def block_hash(self, number: int) -> str | None:
        rows = self._exec("SELECT hash FROM blocks WHERE number = ?", (number,))
        return str(rows[0]["hash"]) if rows else None

    def recent_blocks(self) -> list[tuple[int, str]]:
        return [(int(r["number"]), str(r["hash"])) for r in
                self._exec("SELECT number, hash FROM blocks ORDER BY number DESC")]

    def advance(self, number: int, block_hash: str, keep: int = 256) -> None:
        """Records block `number` as scanned (the new cursor); forgets hashes older than `keep` blocks."""
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.execute("INSERT OR REPLACE INTO blocks(number, hash) VALUES (?, ?)", (number, block_hash))
            self._conn.execute("DELETE FROM blocks WHERE number < ?", (number - keep,))
            self._conn.execute("COMMIT")

    def rewind(self, fork_point: int) -> int:
        """Forgets everything seen above `fork_point` after a reorg: scanned blocks, claims, and the jobs of
        challenges opened there (re-created when the new chain has them too; their challenge ids may now
        name other claims), whose pending transactions are abandoned, never re-broadcast. Returns the
        number of jobs dropped."""
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM blocks WHERE number > ?", (fork_point,))
            self._conn.execute("DELETE FROM claims WHERE block > ?", (fork_point,))
            self._conn.execute("UPDATE txs SET state = 'abandoned' WHERE state = 'pending' AND challenge_id IN "
                               "(SELECT challenge_id FROM jobs WHERE opened_block > ?)", (fork_point,))
            cur = self._conn.execute("DELETE FROM jobs WHERE opened_block > ?", (fork_point,))
            self._conn.execute("COMMIT")
            return int(cur.rowcount)

    # ---- claims ---------------------------------------------------------------------------------------

    def put_claim(self, claim_id: int, kind: int, fields: dict[str, Any], block: int) -> None:
        self._exec("INSERT OR REPLACE INTO claims(id, kind, fields, block) VALUES (?, ?, ?, ?)",
                   (claim_id, kind, json.dumps(fields, sort_keys=True), block))

    def get_claim(self, claim_id: int) -> tuple[int, dict[str, Any]] | None:
        rows = self._exec("SELECT kind, fields FROM claims WHERE id = ?", (claim_id,))
        return (int(rows[0]["kind"]), json.loads(rows[0]["fields"])) if rows else None

    # ---- jobs -----------------------------------------------------------------------------------------

    def add_job(self, challenge_id: int, claim_id: int, opened_block: int) -> bool:
        """A job for a newly seen challenge; False if it was known (a re-scan after a restart). A known job
        whose challenge now comes from another block or claim, or was found gone from the chain, is started
        afresh: a reorg re-used the id (the on-chain checks before each send keep a restart safe)."""
        with self._lock:
            rows = self._exec("SELECT claim_id, opened_block, outcome FROM jobs WHERE challenge_id = ?",
                              (challenge_id,))
            if rows:
                r = rows[0]
                if (int(r["claim_id"]), int(r["opened_block"])) == (claim_id, opened_block) \
                        and r["outcome"] != "unknown":
                    return False
                self._exec("DELETE FROM jobs WHERE challenge_id = ?", (challenge_id,))
            self._exec("INSERT INTO jobs(challenge_id, claim_id, opened_block, state, updated) "
                       "VALUES (?, ?, ?, 'new', ?)", (challenge_id, claim_id, opened_block, time.time()))
            return True

    def update_job(self, challenge_id: int, **values: Any) -> None:
        if not values:
            return
        for key in ("segments", "report"):
            if key in values and values[key] is not None:
                values[key] = json.dumps(values[key], sort_keys=True)
        if "published" in values:
            values["published"] = int(bool(values["published"]))
        values["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in values)
        self._exec(f"UPDATE jobs SET {cols} WHERE challenge_id = ?", (*values.values(), challenge_id))

    def job(self, challenge_id: int) -> Job | None:
        rows = self._exec("SELECT * FROM jobs WHERE challenge_id = ?", (challenge_id,))
        return _job(rows[0]) if rows else None

    def jobs(self, states: tuple[str, ...] = ACTIVE_STATES) -> list[Job]:
        marks = ", ".join("?" for _ in states)
        rows = self._exec(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY challenge_id", states)
        return [_job(r) for r in rows]

    def job_counts(self) -> dict[str, int]:
        rows = self._exec("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        counts = {s: 0 for s in JOB_STATES}
        counts.update({str(r["state"]): int(r["n"]) for r in rows})
        return counts

    # ---- transactions ---------------------------------------------------------------------------------

    def add_tx(self, tx_hash: str, purpose: str, challenge_id: int | None, nonce: int, raw: bytes) -> None:
        self._exec("INSERT OR REPLACE INTO txs(hash, purpose, challenge_id, nonce, raw, created, state) "
                   "VALUES (?, ?, ?, ?, ?, ?, 'pending')", (tx_hash, purpose, challenge_id, nonce, raw, time.time()))

    def set_tx_state(self, tx_hash: str, state: str) -> None:
        self._exec("UPDATE txs SET state = ? WHERE hash = ?", (state, tx_hash))

    def pending_txs(self) -> list[TxRecord]:
        rows = self._exec("SELECT * FROM txs WHERE state = 'pending' ORDER BY nonce")
        return [TxRecord(str(r["hash"]), str(r["purpose"]), r["challenge_id"], int(r["nonce"]), bytes(r["raw"]),
                         float(r["created"]), str(r["state"])) for r in rows]

    def txs(self, purpose: str | None = None) -> list[TxRecord]:
        rows = self._exec("SELECT * FROM txs ORDER BY created") if purpose is None else \
            self._exec("SELECT * FROM txs WHERE purpose = ? ORDER BY created", (purpose,))
        return [TxRecord(str(r["hash"]), str(r["purpose"]), r["challenge_id"], int(r["nonce"]), bytes(r["raw"]),
                         float(r["created"]), str(r["state"])) for r in rows]


def _job(r: sqlite3.Row) -> Job:
    return Job(
        challenge_id=int(r["challenge_id"]), claim_id=int(r["claim_id"]), opened_block=int(r["opened_block"]),
        state=str(r["state"]), position=None if r["position"] is None else int(r["position"]),
        segments=None if r["segments"] is None else [int(s) for s in json.loads(r["segments"])],
        verdict=r["verdict"], reason=r["reason"], results_hash=r["results_hash"], report_cid=r["report_cid"],
        report=None if r["report"] is None else json.loads(r["report"]), published=bool(r["published"]),
        attempts=int(r["attempts"]), first_try=r["first_try"], next_try=float(r["next_try"]), outcome=r["outcome"],
        salt=r["salt"],
    )
