//! Durable storage of a region's [`Durable`] state in sled.
//!
//! The store only moves bytes: [`Store::persist`] writes one flush's
//! [`Persist`] as one record of the write-ahead log ([`crate::shell::wal`]),
//! which makes it durable and atomic, then into sled; [`Store::checkpoint`]
//! flushes sled and retires the log behind it; and
//! [`Store::load`] reads everything back at startup. When to flush is decided by
//! the group commit in [`crate::shell::engine`].
//!
//! Keys (one sled tree) begin with a byte that says what they hold; the
//! layout is in [`crate::shell::keys`]. Only [`Store::load`], at startup,
//! reads the ledger's keys (accounts with our own entries, versions held,
//! idempotency records, holds, the [`Meta`] scalars); a group commit logs
//! them and a checkpoint writes them to sled, each key once however often it
//! changed. The other keys are read while the node runs, so they reach sled
//! with their commit, except statement chunks and notes, which wait in
//! [`Pending`] (which every read lays over sled) until the next checkpoint
//! writes them, each user's merged into few keys (see
//! [`crate::shell::statements`]). An AI job's result rides a group commit;
//! its other writes are plain inserts (see [`crate::shell::jobs`]).

use crate::NodeError;
use crate::shell::keys;
use crate::shell::pending::Pending;
use crate::shell::statements;
use crate::shell::wal::Log;
use crate::{AccountWrite, Durable, Meta, Packed, Persist};
use crate::{HoldId, HoldState, IdempotencyRecord, Millis, RecordId, Seq};
use ledger_crdt::{Account, RegionId, wire};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

/// A key and its value.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);
/// A key and its new value (`None` removes it).
pub(crate) type Write = (Vec<u8>, Option<Vec<u8>>);

/// The most bytes of an idempotency record (fingerprint included).
const MAX_RECORD_BYTES: usize = 4 * 1024;
/// The most bytes of the meta record.
const MAX_META_BYTES: usize = 1024 * 1024;

/// The node's sled database, with the write-ahead log in front of it
/// ([`crate::shell::wal`]).
///
/// sled remembers an I/O error for good: after one failed write (a full disk)
/// every later call fails, even once space is free. So a failed write closes
/// the database, and the next write opens it again from disk; sled's recovery
/// keeps what it flushed, the log's recovery adds every logged write, and the
/// caller writes the rest again.
pub(crate) struct Store {
    dir: PathBuf,
    cache_bytes: u64,
    /// `None` after a failure, until it could be opened again.
    db: RwLock<Option<sled::Db>>,
    /// The log of the open database (`None` with it). Held for a whole group
    /// commit or direct write; taken before `pending`, and that before `db`.
    log: Mutex<Option<Log>>,
    /// Statement writes logged but not yet in sled.
    pending: RwLock<Pending>,
    /// Held for a whole checkpoint.
    checkpointing: Mutex<()>,
}

/// Applies `writes` to sled one key at a time: the log already made them
/// atomic and durable.
fn apply(db: &sled::Db, writes: impl IntoIterator<Item = Write>) -> Result<(), NodeError> {
    for (k, v) in writes {
        match v {
            Some(v) => db.insert(k, v)?,
            None => db.remove(k)?,
        };
    }
    Ok(())
}

fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db, NodeError> {
    remove_unfinished_snapshots(dir)?;
    Ok(sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        // Checkpoints flush; sled's own 500 ms flusher would only compete
        // with them for the log.
        .flush_every_ms(None)
        .open()?)
}

/// Removes `snap.*.generating` files: snapshots sled began but never finished
/// (a full disk stopped the write). sled renames a snapshot into place only
/// after writing and syncing all of it, so such a file never was the snapshot;
/// but sled 0.34 still reads it as the newest one (its name sorts last), finds
/// it truncated, and refuses to open the database at all (sled issue #1527).
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), NodeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let path = entry?.path();
        let unfinished = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"));
        if unfinished {
            tracing::warn!(file = %path.display(), "removing an unfinished sled snapshot");
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

impl Store {
    /// Opens (or creates) the database in `dir`, with every logged write.
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Self, NodeError> {
        let store = Self {
            dir: dir.to_owned(),
            cache_bytes,
            db: RwLock::new(None),
            log: Mutex::new(None),
            pending: RwLock::new(Pending::default()),
            checkpointing: Mutex::new(()),
        };
        store.open_locked(&mut store.lock_log())?;
        Ok(store)
    }

    /// The store in `dir` opened again after a drop. sled's I/O threads may
    /// hold the directory's lock a moment after its last handle goes.
    #[cfg(test)]
    pub(crate) fn reopen(dir: &Path) -> Self {
        for _ in 0..250 {
            match Self::open(dir, 1 << 20) {
                Ok(store) => return store,
                Err(e) if e.to_string().contains("lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("sled kept its lock for 5 s");
    }

    fn lock_log(&self) -> MutexGuard<'_, Option<Log>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending_mut(&self) -> std::sync::RwLockWriteGuard<'_, Pending> {
        self.pending.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps checkpoints off while held: what reads lines and then removes
    /// them (retention, erasure) holds it, so no checkpoint merges a chunk
    /// it read with one it did not.
    pub(crate) fn hold_checkpoints(&self) -> MutexGuard<'_, ()> {
        self.checkpointing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The open database, opening it again (with the log's recovery) after a
    /// failure.
    fn db(&self) -> Result<sled::Db, NodeError> {
        if let Some(db) = self
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(db.clone());
        }
        self.open_locked(&mut self.lock_log())
    }

    /// The open database and its log (`log` is the held lock); recovery
    /// applies every logged write, held back or not.
    fn open_locked(&self, log: &mut Option<Log>) -> Result<sled::Db, NodeError> {
        // Every group commit comes here: while open, a shared lock suffices.
        if let (Some(db), Some(_)) = (
            self.db
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref(),
            log.as_ref(),
        ) {
            return Ok(db.clone());
        }
        // Readers take `pending` before `db`, so a reader never pairs a
        // reopened database with writes its recovery already holds.
        let mut pending = self.pending_mut();
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if let (Some(db), Some(_)) = (slot.as_ref(), log.as_ref()) {
            return Ok(db.clone());
        }
        let reopening = slot.take().is_some() || log.is_some();
        let db = open_db(&self.dir, self.cache_bytes)?;
        let (recovered, found) = Log::recover(&self.dir, &db)?;
        // The recovery wrote every logged write to sled.
        pending.clear();
        if found.records > 0 {
            tracing::info!(
                files = found.files,
                records = found.records,
                torn = found.torn,
                "replayed the write-ahead log"
            );
        }
        if reopening {
            tracing::info!(dir = %self.dir.display(), "storage reopened");
        }
        *log = Some(recovered);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Drops the failed handle and its log, so the next call opens the
    /// database afresh and recovers the log's files (`log` is the held lock).
    fn close_after_failure(&self, log: &mut Option<Log>) {
        *log = None;
        let old = self
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(old);
    }

    /// Writes one flush's changes and makes them durable: one log record,
    /// then sled in memory. Blocking. After a failure the database is reopened
    /// by the next call. `extra` are the shell's own writes riding this flush
    /// (see [`crate::shell::engine::Engine::write_durable`]).
    pub(crate) fn persist(&self, persist: &Persist, extra: Vec<Write>) -> Result<(), NodeError> {
        let mut log = self.lock_log();
        let result = self.open_locked(&mut log).and_then(|db| {
            let writes = Self::writes(&db, persist, extra)?;
            let open = log.as_mut().ok_or(NodeError::FlushFailed)?;
            open.append(&writes)?;
            // Durable from here: recovery replays the record whatever sled
            // holds, so sled needs neither a batch nor a flush. One pass:
            // the ledger's keys wait for the checkpoint, statement chunks
            // wait in `pending` while it has room, the rest go to sled now.
            let mut pending = self.pending_mut();
            let room = pending.has_room();
            let mut now = Vec::new();
            for (k, v) in writes {
                if k.first()
                    .is_some_and(|p| keys::READ_ONLY_AT_START.contains(p))
                {
                    open.hold_back(k, v);
                    continue;
                }
                match v {
                    Some(v) if room && Pending::takes(&k) => pending.insert(k, v),
                    v => now.push((k, v)),
                }
            }
            drop(pending);
            apply(&db, now)?;
            Ok(())
        });
        if result.is_err() {
            self.close_after_failure(&mut log);
        }
        result
    }

    /// Every key one flush writes: `extra`, then the replica's changes.
    fn writes(
        db: &sled::Db,
        persist: &Persist,
        extra: Vec<Write>,
    ) -> Result<Vec<Write>, NodeError> {
        let mut writes = extra;
        // Grown once: at most a chunk per line and a note, each account,
        // record and hold, the meta.
        writes.reserve(
            persist.statement.len()
                + persist.accounts.len()
                + persist.records.len()
                + persist.holds.len()
                + 2,
        );
        // Statement lines, with ids that only grow (across restarts too).
        let ids = (0..persist.statement.len())
            .map(|_| db.generate_id())
            .collect::<Result<Vec<u64>, _>>()?;
        writes.extend(
            statements::line_writes(&persist.statement, ids.into_iter())?
                .into_iter()
                .filter(|(_, v)| v.is_some()),
        );
        for (user, write) in &persist.accounts {
            writes.push((keys::account(user), Some(wire::encode(write)?)));
        }
        for (id, record) in &persist.records {
            let value = record.as_ref().map(wire::encode).transpose()?;
            writes.push((keys::record(&id.scope, &id.key), value));
        }
        for (id, hold) in &persist.holds {
            let value = hold.as_ref().map(wire::encode).transpose()?;
            writes.push((keys::hold(&id.user, &id.job), value));
        }
        writes.push((vec![keys::META], Some(wire::encode(&persist.meta)?)));
        Ok(writes)
    }

    /// Makes every logged write durable in sled and deletes the log files
    /// that held them; group commits go on meanwhile, into a new file.
    /// Blocking; run about once a second (see
    /// [`crate::shell::engine::Engine::start_checkpoints`]).
    pub(crate) fn checkpoint(&self) -> Result<(), NodeError> {
        // Two at once could apply held-back values out of order.
        let _one_at_a_time = self
            .checkpointing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (db, unapplied, merging, generations) = {
            let mut log = self.lock_log();
            let Some(open) = log.as_mut() else {
                return Ok(());
            };
            // Deferred writes wait at most one interval for a record.
            if open.has_deferred()
                && let Err(e) = open.append(&[])
            {
                self.close_after_failure(&mut log);
                return Err(e.into());
            }
            if open.is_empty() {
                return Ok(());
            }
            let Some(db) = self
                .db
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
            else {
                return Ok(());
            };
            let merging = self.pending_mut().begin_merge();
            (db, open.take_unapplied(), merging, open.rotate())
        };
        // Every write in those files is in sled now, in `unapplied` or in
        // `merging`. Applied in key order, as `merging` is: neighbouring keys
        // share sled's pages, so a page its cache no longer holds is read back
        // once per checkpoint, not once per key.
        let mut unapplied: Vec<Write> = unapplied.into_iter().collect();
        unapplied.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let flushed = apply(&db, unapplied)
            .and_then(|()| apply(&db, statements::merge_pending(&merging)?))
            .and_then(|()| Ok(db.flush()?));
        drop(db);
        let mut log = self.lock_log();
        if let Err(e) = flushed {
            self.close_after_failure(&mut log);
            return Err(e);
        }
        self.pending_mut().end_merge();
        // After a reopen the files are gone already (recovery deleted them).
        let headroom = match log.as_mut().map(|open| open.forget(&generations)) {
            Some(Ok(headroom)) => headroom,
            Some(Err(e)) => {
                self.close_after_failure(&mut log);
                return Err(e.into());
            }
            None => None,
        };
        drop(log);
        // Off the log's lock: group commits go on, into a file of their own.
        if let Some(headroom) = headroom
            && let Err(e) = headroom.make()
        {
            tracing::debug!(error = %e, "the log's spare could not be lengthened; the next file starts empty");
        }
        Ok(())
    }

    /// A checkpoint that stops where a crash could: sled holds the merged
    /// statement writes, flushed, and the log behind them is still there.
    #[cfg(test)]
    pub(crate) fn merge_without_forgetting(&self) -> Result<(), NodeError> {
        let db = self.db()?;
        let merging = self.pending_mut().begin_merge();
        apply(&db, statements::merge_pending(&merging)?)?;
        db.flush()?;
        Ok(())
    }

    /// Reads the whole durable state back. Own entries and versions held that
    /// an older version kept under keys of their own are moved into their
    /// accounts first.
    pub(crate) fn load(&self) -> Result<Durable, NodeError> {
        let db = self.db()?;
        move_into_accounts(&db, keys::OWN_ENTRY, "own entries", legacy_own_entry)?;
        move_into_accounts(
            &db,
            keys::VERSION_HELD,
            "versions held",
            legacy_version_held,
        )?;
        let mut all = Persist::default();
        for item in db.scan_prefix([keys::ACCOUNT]) {
            let (k, v) = item?;
            let write = decode_account(&v)?;
            all.accounts.push((text(keys::after_prefix(&k))?, write));
        }
        for item in db.scan_prefix([keys::RECORD]) {
            let (k, v) = item?;
            let (scope, key) = keys::split_pair(&k).ok_or_else(|| corrupt("record key"))?;
            let record = decode_record(&v)?;
            let id = RecordId {
                scope: text(scope)?,
                key: text(key)?,
            };
            all.records.push((id, Some(record)));
        }
        for item in db.scan_prefix([keys::HOLD]) {
            let (k, v) = item?;
            let (user, job) = keys::split_pair(&k).ok_or_else(|| corrupt("hold key"))?;
            let hold = wire::decode::<HoldState, MAX_RECORD_BYTES>(&v)?;
            let id = HoldId {
                user: text(user)?,
                job: text(job)?,
            };
            all.holds.push((id, Some(hold)));
        }
        if let Some(meta) = db.get([keys::META])? {
            all.meta = wire::decode::<Meta, MAX_META_BYTES>(&meta)?;
        }
        let mut durable = Durable::default();
        durable.apply(&all);
        Ok(durable)
    }

    /// Applies `writes` (`None` removes) in one batch. With `flush` they are
    /// a log record of their own, durable before this returns; without, they
    /// join the next group commit's record (or the next checkpoint's).
    /// Blocking.
    pub(crate) fn write_now(&self, writes: Vec<Write>, flush: bool) -> Result<(), NodeError> {
        let mut log = self.lock_log();
        let result = self.open_locked(&mut log).and_then(|db| {
            let open = log.as_mut().ok_or(NodeError::FlushFailed)?;
            if flush {
                open.append(&writes)?;
            } else {
                open.defer(&writes);
            }
            // One batch under `pending`: a reader sees all of it or none.
            let mut pending = self.pending_mut();
            for (k, v) in &writes {
                if v.is_none() && Pending::takes(k) {
                    pending.remove(k);
                }
            }
            db.apply_batch(batch_of(writes))?;
            Ok(())
        });
        if result.is_err() {
            self.close_after_failure(&mut log);
        }
        result
    }

    /// Runs `read` on sled, with the pending writes it must lay over them
    /// if `pending` says it may meet any, as one consistent pair (see
    /// [`Store::open_locked`]).
    fn read<T>(
        &self,
        pending: bool,
        read: impl FnOnce(&sled::Db, Option<&Pending>) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        if !pending {
            return read(&self.db()?, None);
        }
        loop {
            // Opens the database again after a failure.
            self.db()?;
            let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
            let db = self
                .db
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            // `None`: another failure closed it meanwhile; open it again.
            if let Some(db) = db {
                return read(&db, Some(&pending));
            }
        }
    }

    /// The value under `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, NodeError> {
        self.read(Pending::takes(key), |db, pending| {
            match pending.and_then(|p| p.get(key)) {
                Some(v) => Ok(Some(v.clone())),
                None => Ok(db.get(key)?.map(|v| v.to_vec())),
            }
        })
    }

    /// Every key and value from `start` (inclusive) to `end` (exclusive).
    pub(crate) fn scan_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, NodeError> {
        self.scan_first(start, end, usize::MAX)
    }

    /// The first `limit` keys and values from `start` (inclusive) to `end`
    /// (exclusive).
    pub(crate) fn scan_first(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, NodeError> {
        self.read(Pending::may_hold(start, end), |db, pending| {
            let from_sled = owned(db.range(start..end).take(limit))?;
            Ok(match pending {
                Some(p) => p.lay_over(from_sled, start, end, false, limit),
                None => from_sled,
            })
        })
    }

    /// Up to `limit` keys and values from `end` (exclusive) back to `start`
    /// (inclusive), the last first.
    pub(crate) fn scan_back(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, NodeError> {
        self.read(Pending::may_hold(start, end), |db, pending| {
            let from_sled = owned(db.range(start..end).rev().take(limit))?;
            Ok(match pending {
                Some(p) => p.lay_over(from_sled, start, end, true, limit),
                None => from_sled,
            })
        })
    }

    /// Every key and value under `prefix` (an ASCII letter).
    pub(crate) fn scan(&self, prefix: u8) -> Result<Vec<KeyValue>, NodeError> {
        self.scan_range(&[prefix], &[prefix.saturating_add(1)])
    }

    /// Whether storage accepts a write right now (for `/ready`).
    pub(crate) fn writable(&self) -> bool {
        self.db()
            .and_then(|db| Ok(db.insert(b"~ready", &b"1"[..])?))
            .is_ok()
    }
}

/// A record as stored before records knew the write that made them.
#[derive(bincode::Decode)]
struct RecordBeforeWrites {
    fingerprint: String,
    receipt: crate::Receipt,
    at_ms: u64,
}

/// The versions held, as an account's value carries them.
type Held = Vec<(RegionId, Seq)>;

/// An account's value: [`AccountWrite`]'s encoding (the account, our own
/// entry if any, the versions held), or as older versions wrote it: the
/// account and our own entry, or the account alone.
fn decode_account(bytes: &[u8]) -> Result<AccountWrite, NodeError> {
    let pack_own = |(seq, own): (Seq, Account)| (seq, Packed::pack(&own));
    // Each layout is the one before it plus a trailer, and decoding rejects
    // both trailing and missing bytes, so no layout reads as another.
    let (account, own, held) =
        match Account::with_trailer_from_bytes::<(Option<(Seq, Account)>, Held)>(bytes) {
            Ok((account, (own, held))) => (account, own.map(pack_own), held),
            Err(_) => match Account::with_trailer_from_bytes::<Option<(Seq, Account)>>(bytes) {
                Ok((account, own)) => (account, own.map(pack_own), Held::new()),
                Err(_) => (Account::from_bytes(bytes)?, None, Held::new()),
            },
        };
    Ok(AccountWrite {
        account: Packed::pack(&account),
        own,
        held,
    })
}

/// A value that older versions kept under a key of its own, and this version
/// keeps in the user's account value.
enum Legacy {
    /// Our own entry of the user ([`keys::OWN_ENTRY`]): before
    /// [`AccountWrite`], a spend wrote two keys.
    OwnEntry(Seq, Account),
    /// The version held of `origin`'s entry ([`keys::VERSION_HELD`]): before
    /// [`AccountWrite::held`], a merge wrote two keys.
    VersionHeld(RegionId, Seq),
}

/// Reads one key of a [`Legacy`] kind and its value: the user, and the value.
type LegacyDecoder = fn(&[u8], &[u8]) -> Result<(String, Legacy), NodeError>;

/// The user and value of a [`keys::OWN_ENTRY`] key.
fn legacy_own_entry(key: &[u8], value: &[u8]) -> Result<(String, Legacy), NodeError> {
    let (seq, own): (Seq, Account) = wire::decode::<_, { wire::MAX_ACCOUNT_BYTES + 16 }>(value)?;
    Ok((text(keys::after_prefix(key))?, Legacy::OwnEntry(seq, own)))
}

/// The user and value of a [`keys::VERSION_HELD`] key.
fn legacy_version_held(key: &[u8], value: &[u8]) -> Result<(String, Legacy), NodeError> {
    let (origin, user) = keys::split_version_held(key).ok_or_else(|| corrupt("seq key"))?;
    let seq: [u8; 8] = value.try_into().map_err(|_| corrupt("seq value"))?;
    Ok((
        text(user)?,
        Legacy::VersionHeld(origin, Seq(u64::from_be_bytes(seq))),
    ))
}

/// Moves every value under `prefix`, which older versions kept under keys of
/// their own ([`Legacy`]), into its account's value, in a batch per key that
/// also removes the old key, so a crash midway leaves every user whole; then
/// sled is flushed. Runs at startup, after the log was replayed.
fn move_into_accounts(
    db: &sled::Db,
    prefix: u8,
    what: &str,
    decode: LegacyDecoder,
) -> Result<(), NodeError> {
    let mut moved = 0u64;
    for item in db.scan_prefix([prefix]) {
        let (k, v) = item?;
        if moved == 0 {
            // Once, after an upgrade; with millions of users it takes a while.
            tracing::info!("moving {what} into their accounts, as this version keeps them");
        }
        let (user, legacy) = decode(&k, &v)?;
        let account_key = keys::account(&user);
        let mut write = match db.get(&account_key)? {
            Some(bytes) => decode_account(&bytes)?,
            None => AccountWrite {
                account: Packed::pack(&Account::default()),
                own: None,
                held: Held::new(),
            },
        };
        match legacy {
            Legacy::OwnEntry(seq, own) => write.own = Some((seq, Packed::pack(&own))),
            Legacy::VersionHeld(origin, seq) => {
                match write.held.iter_mut().find(|(o, _)| *o == origin) {
                    Some((_, held)) => *held = (*held).max(seq),
                    None => {
                        write.held.push((origin, seq));
                        write.held.sort_unstable();
                    }
                }
            }
        }
        let mut batch = sled::Batch::default();
        batch.insert(account_key, wire::encode(&write)?);
        batch.remove(k);
        db.apply_batch(batch)?;
        moved += 1;
    }
    if moved > 0 {
        db.flush()?;
        tracing::info!(keys = moved, "moved {what} into their accounts");
    }
    Ok(())
}

/// Decodes a stored record, in either format. An old one is taken as made by
/// no known write (sequence 0): it still answers retries here, and is simply
/// not part of catch-up.
fn decode_record(bytes: &[u8]) -> Result<IdempotencyRecord, NodeError> {
    match wire::decode::<IdempotencyRecord, MAX_RECORD_BYTES>(bytes) {
        Ok(record) => Ok(record),
        Err(e) => {
            let Ok(old) = wire::decode::<RecordBeforeWrites, MAX_RECORD_BYTES>(bytes) else {
                return Err(e.into());
            };
            Ok(IdempotencyRecord {
                fingerprint: old.fingerprint,
                receipt: old.receipt,
                at: Millis(old.at_ms),
                origin: RegionId(0),
                seq: Seq::ZERO,
            })
        }
    }
}

/// The keys and values of a sled scan, copied out of sled's buffers.
fn owned(
    items: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
) -> Result<Vec<KeyValue>, NodeError> {
    items
        .map(|item| {
            let (k, v) = item?;
            Ok((k.to_vec(), v.to_vec()))
        })
        .collect()
}

/// A sled batch of `writes`.
pub(crate) fn batch_of(writes: Vec<Write>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (k, v) in writes {
        match v {
            Some(v) => batch.insert(k, v),
            None => batch.remove(k),
        }
    }
    batch
}

fn text(bytes: &[u8]) -> Result<String, NodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("non-UTF-8 key"))
}

fn corrupt(what: &str) -> NodeError {
    NodeError::Corrupt(ledger_crdt::Error::Decode(what.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Receipt;

    #[derive(bincode::Encode)]
    struct OldRecord {
        fingerprint: String,
        receipt: Receipt,
        at_ms: u64,
    }

    #[test]
    fn records_stored_by_the_previous_version_still_load() {
        let receipt = Receipt {
            balance: 7,
            spendable_here: 7,
            calls: 3,
        };
        let old = wire::encode(&OldRecord {
            fingerprint: "memes".into(),
            receipt,
            at_ms: 42,
        })
        .expect("encode");
        let record = decode_record(&old).expect("decodes");
        assert_eq!(
            (record.receipt, record.at, record.seq),
            (receipt, Millis(42), Seq::ZERO)
        );
        let new = IdempotencyRecord {
            origin: RegionId(2),
            seq: Seq(9),
            ..record
        };
        let bytes = wire::encode(&new).expect("encode");
        assert_eq!(decode_record(&bytes).expect("decodes"), new);
        assert!(decode_record(&bytes[..bytes.len() / 2]).is_err());
    }

    fn spent(amount: u64) -> Account {
        let genesis = ledger_crdt::Genesis::new(150, [RegionId(1)]).expect("genesis");
        let mut account = Account::new();
        let spend = ledger_crdt::Op::Spend { amount, call: true };
        account.apply(&genesis, RegionId(1), spend).expect("spend");
        account
    }

    #[test]
    fn an_account_value_reads_in_each_layout_it_was_written_in() {
        let with = AccountWrite {
            account: Packed::pack(&spent(3)),
            own: Some((Seq(7), Packed::pack(&spent(2)))),
            held: vec![(RegionId(2), Seq(11)), (RegionId(3), Seq(4))],
        };
        let without = AccountWrite {
            account: Packed::pack(&spent(5)),
            own: None,
            held: Vec::new(),
        };
        for write in [&with, &without] {
            let bytes = wire::encode(write).expect("encode");
            assert_eq!(&decode_account(&bytes).expect("decodes"), write);
        }
        let bytes = wire::encode(&with).expect("encode");
        assert!(decode_account(&bytes[..bytes.len() - 1]).is_err());
        // As versions before the versions held wrote it: the account and our
        // entry, which is `with` short of its held list.
        let before_held = wire::encode(&(spent(3), Some((Seq(7), spent(2))))).expect("encode");
        let read = decode_account(&before_held).expect("decodes");
        assert_eq!(read.own, with.own);
        assert_eq!(read.account, with.account);
        assert!(read.held.is_empty());
        // As versions before AccountWrite wrote it: the account alone, which
        // is `without` short of its "none" tag and its empty list's length.
        let alone = spent(5).to_bytes().expect("encode");
        assert_eq!(decode_account(&alone).expect("decodes"), without);
        let bytes = wire::encode(&without).expect("encode");
        assert_eq!(&bytes[..bytes.len() - 2], alone.as_slice());
    }

    #[test]
    fn values_under_keys_of_their_own_move_into_their_accounts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 1 << 20).expect("open");
        let db = store.db().expect("db");
        // As older versions wrote them: users we wrote, whose entries from
        // regions 2 and 3 we held; and "bob", only merged from region 2.
        let put = |key: Vec<u8>, value: Vec<u8>| db.insert(key, value).expect("insert");
        let held = |origin: u16, i: u64| (RegionId(origin), Seq(1_000 * u64::from(origin) + i));
        let mut accounts = Vec::new();
        for i in 0..100u64 {
            let user = format!("user-{i}");
            put(
                keys::account(&user),
                spent(3 + i).to_bytes().expect("encode"),
            );
            let own = (Seq(i + 1), spent(2 + i));
            put(keys::own_entry(&user), wire::encode(&own).expect("encode"));
            for (origin, seq) in [held(3, i), held(2, i)] {
                put(
                    keys::version_held(origin, &user),
                    seq.0.to_be_bytes().to_vec(),
                );
            }
            let write = AccountWrite {
                account: Packed::pack(&spent(3 + i)),
                own: Some((own.0, Packed::pack(&own.1))),
                held: vec![held(2, i), held(3, i)],
            };
            accounts.push((user, write));
        }
        put(keys::account("bob"), spent(9).to_bytes().expect("encode"));
        put(
            keys::version_held(RegionId(2), "bob"),
            5u64.to_be_bytes().to_vec(),
        );
        accounts.push((
            "bob".into(),
            AccountWrite {
                account: Packed::pack(&spent(9)),
                own: None,
                held: vec![(RegionId(2), Seq(5))],
            },
        ));

        let loaded = store.load().expect("load");
        let mut expected = Durable::default();
        expected.apply(&Persist {
            accounts: accounts.clone(),
            ..Persist::default()
        });
        assert_eq!(loaded, expected);
        assert_eq!(db.scan_prefix([keys::OWN_ENTRY]).count(), 0);
        assert_eq!(db.scan_prefix([keys::VERSION_HELD]).count(), 0);
        for (user, write) in &accounts {
            let stored = db.get(keys::account(user)).expect("get").expect("stored");
            assert_eq!(&decode_account(&stored).expect("decodes"), write);
        }
        // Moved once: the next start reads the same.
        assert_eq!(store.load().expect("load again"), expected);
    }

    #[test]
    fn versions_held_an_older_version_only_logged_load_after_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let own = (Seq(3), spent(2));
        {
            let store = Store::open(dir.path(), 1 << 20).expect("open");
            // As an older version's group commit logged them: the account
            // with our entry, and the version held under a key of its own.
            // Both are held back for a checkpoint that never comes.
            let old_account = wire::encode(&(spent(4), Some(own.clone()))).expect("encode");
            let extra = vec![
                (keys::account("ann"), Some(old_account)),
                (
                    keys::version_held(RegionId(2), "ann"),
                    Some(7u64.to_be_bytes().to_vec()),
                ),
            ];
            store.persist(&Persist::default(), extra).expect("persist");
            let db = store.db().expect("db");
            assert_eq!(
                db.get(keys::account("ann")).expect("get"),
                None,
                "in the log alone"
            );
        }
        // The restart replays the log into sled, then moves the version.
        let store = Store::reopen(dir.path());
        let mut expected = Durable::default();
        expected.apply(&Persist {
            accounts: vec![(
                "ann".into(),
                AccountWrite {
                    account: Packed::pack(&spent(4)),
                    own: Some((own.0, Packed::pack(&own.1))),
                    held: vec![(RegionId(2), Seq(7))],
                },
            )],
            ..Persist::default()
        });
        assert_eq!(store.load().expect("load"), expected);
        assert_eq!(
            store
                .db()
                .expect("db")
                .scan_prefix([keys::VERSION_HELD])
                .count(),
            0
        );
    }
}
