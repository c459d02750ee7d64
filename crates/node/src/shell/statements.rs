//! Users' statements on disk: the lines the core makes (see
//! [`crate::region::statement`]), pages of them newest first, usage by UTC
//! day, retention, and removal.
//!
//! Keys (in the store's one tree, beside the ledger's; built in
//! [`crate::shell::keys`]):
//! - `l` + user + `0x00` + line id (8 bytes, big-endian) → a chunk: the
//!   user's lines (at most [`LINES_PER_CHUNK`]), each with its id, the first
//!   of which names the key. A chunk is [`CHUNK_TAG`], the wire version, the
//!   number of lines (one byte), then the lines end to end, each without its
//!   user (the key names it): so a line stores no name, and two chunks join
//!   by copying their lines' bytes. A group commit logs one chunk per user; they
//!   wait in [`crate::shell::pending`] (reads see them there), and the next
//!   checkpoint merges each user's consecutive chunks into one while they
//!   hold at most [`LINES_PER_CHUNK`] lines ([`merge_pending`]). Not a key per
//!   line, nor per commit: sled splits a leaf every 16 keys, and with a key
//!   per line its inserts and splits were a tenth of a spend's CPU, with a
//!   key per user and commit a sixth of the three-region run's. Stores from
//!   before chunks hold one line under each key, and stores from before
//!   lines left their user out hold chunks of whole lines
//!   ([`CHUNK_TAG_WITH_USERS`]); all read alike.
//! - `L` + time (8 bytes, big-endian ms) + a line's id → the keys of chunks
//!   (each after its length, 2 bytes, big-endian): when they were made, so
//!   retention reads only what expired. A group commit logs one note; a
//!   checkpoint merges its commits' notes into one, under the newest's key,
//!   so retention works to the nearest checkpoint (about a second), never
//!   sooner than the retention.
//! - `b` + user → the user's carried-forward total: what the lines compacted
//!   away (by retention or removal) added up to
//!
//! Line ids come from sled's `generate_id`, which only grows, across restarts
//! too: a newer line always has a larger id, so a cursor (the last id a page
//! showed) pages through exactly the lines older than it, however many are
//! written meanwhile. A chunk holds only ids at or above its key's, so the
//! chunks before a cursor's key hold every line older than it (the chunk the
//! cursor falls in, some newer ones too, which a page leaves out).
//!
//! A merge survives a crash before the checkpoint deletes the log behind it:
//! a merged chunk has the key of its first commit's chunk and a merged note
//! the key of its newest commit's note, so replaying the log rewrites each
//! with its own commit's lines and the set of lines is what it was.
//!
//! A statement adds up: the opening balance (the welcome grant plus what was
//! carried forward) plus the amounts of the lines is the balance the lines
//! end at. Compaction moves lines' amounts into the carried-forward total in
//! the same atomic batch that deletes them, so it never breaks that.

use crate::NodeError;
use crate::hashing::Map;
use crate::shell::engine::Engine;
use crate::shell::keys;
use crate::shell::pending::Held;
use crate::shell::store::{Store, Write};
use crate::{LineKind, Millis, StatementLine};
use ledger_crdt::RegionId;
use ledger_crdt::wire;
use std::sync::{Arc, Mutex, MutexGuard};

/// The most bytes of a stored line.
const MAX_LINE_BYTES: usize = 4 * 1024;
/// The most lines under one key: a page reads whole chunks.
const LINES_PER_CHUNK: usize = 64;
/// The first byte of a chunk's value (then the wire version, the number of
/// lines and the lines, each a [`StoredLine`]). A lone line (as stores
/// before chunks wrote them) begins with the wire version, which this is not.
const CHUNK_TAG: u8 = 0xC5;
/// The first byte of a chunk as stores wrote them before lines left their
/// user out: then the lines, whole, as one encoded `Vec`. Read, never written.
const CHUNK_TAG_WITH_USERS: u8 = 0xC4;
/// Bytes before a chunk's lines: its tag, the wire version, the count.
const CHUNK_HEADER_BYTES: usize = 3;
/// Where a chunk's count of lines is.
const COUNT_AT: usize = 2;
/// The most bytes of a stored chunk.
const MAX_CHUNK_BYTES: usize = LINES_PER_CHUNK * (MAX_LINE_BYTES + 10);
/// Lines compacted per batch.
const COMPACT_CHUNK: usize = 4_096;
const DAY_MS: u64 = 24 * 3600 * 1000;

/// One page of a statement, newest first.
pub(crate) struct Page {
    /// The lines, each with its id.
    pub lines: Vec<(u64, StatementLine)>,
    /// The cursor for the next page, if there are older lines.
    pub next: Option<u64>,
}

/// Calls and tokens of one UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DayUsage {
    /// Days since the Unix epoch.
    pub day: u64,
    pub calls: u64,
    /// Tokens charged: spends and captured holds.
    pub spent: u64,
    pub credited: u64,
    pub debited: u64,
}

/// The statements of this region's users.
pub(crate) struct Statements {
    engine: Arc<Engine>,
    grant: u64,
    /// Lines older than this are compacted; `None` keeps them for ever.
    retention_ms: Option<u64>,
    /// One compaction at a time: retention and an erasure both read and
    /// rewrite a user's carried-forward total.
    compacting: Arc<Mutex<()>>,
}

impl Statements {
    pub(crate) fn new(engine: Arc<Engine>, grant: u64, retention_days: u32) -> Self {
        Self {
            engine,
            grant,
            retention_ms: (retention_days > 0).then(|| u64::from(retention_days) * DAY_MS),
            compacting: Arc::new(Mutex::new(())),
        }
    }

    /// Runs `f` on the statements in the engine's store, off the async
    /// threads (see [`Engine::with_store`]).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StatementStore<'_>) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let (grant, retention_ms) = (self.grant, self.retention_ms);
        let compacting = self.compacting.clone();
        self.engine
            .with_store(move |store| {
                f(&StatementStore {
                    store,
                    grant,
                    retention_ms,
                    compacting: &compacting,
                })
            })
            .await
    }
}

/// Statements in one store.
pub(crate) struct StatementStore<'a> {
    store: &'a Store,
    grant: u64,
    retention_ms: Option<u64>,
    compacting: &'a Mutex<()>,
}

impl StatementStore<'_> {
    /// The balance before the oldest line kept: the grant, plus what
    /// compacted lines added up to.
    pub(crate) fn opening(&self, user: &str) -> Result<u64, NodeError> {
        let carried = self.carried(user)?;
        Ok(clamp(i128::from(self.grant) + carried))
    }

    fn carried(&self, user: &str) -> Result<i128, NodeError> {
        Ok(match self.store.get(&keys::statement_carried(user))? {
            Some(bytes) => wire::decode::<i128, 64>(&bytes).map_err(NodeError::from)?,
            None => 0,
        })
    }

    /// Up to `limit` lines of `user` older than `cursor` (all, without one),
    /// newest first.
    pub(crate) fn page(
        &self,
        user: &str,
        cursor: Option<u64>,
        limit: usize,
    ) -> Result<Page, NodeError> {
        let start = keys::statement_chunk(user, 0);
        let end = keys::statement_chunk(user, cursor.unwrap_or(u64::MAX));
        // Each chunk found holds at least one line older than the cursor (its
        // first), so `limit + 1` chunks hold more than a page if there is one.
        let found = self.store.scan_back(&start, &end, limit + 1)?;
        let mut lines = Vec::with_capacity(limit + 1);
        for (k, v) in &found {
            let chunk = decode_chunk(k, v)?;
            lines.extend(
                chunk
                    .into_iter()
                    .rev()
                    .filter(|(id, _)| cursor.is_none_or(|c| *id < c)),
            );
            if lines.len() > limit {
                break;
            }
        }
        let next = (lines.len() > limit).then(|| {
            lines.truncate(limit);
            lines.last().map(|(id, _)| *id)
        });
        Ok(Page {
            lines,
            next: next.flatten(),
        })
    }

    /// `user`'s calls and tokens per UTC day, for the `days` days up to and
    /// including today, newest first (days with nothing are left out).
    pub(crate) fn usage(
        &self,
        user: &str,
        days: u64,
        now_ms: u64,
    ) -> Result<Vec<DayUsage>, NodeError> {
        let today = now_ms / DAY_MS;
        let first = today.saturating_sub(days.saturating_sub(1));
        let mut out: Vec<DayUsage> = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.page(user, cursor, 1_000)?;
            for (_, line) in &page.lines {
                let day = line.at.0 / DAY_MS;
                if day < first {
                    return Ok(out);
                }
                if out.last().is_none_or(|d| d.day != day) {
                    out.push(DayUsage {
                        day,
                        ..DayUsage::default()
                    });
                }
                if let Some(d) = out.last_mut() {
                    d.calls += line.calls;
                    let amount = line.amount.unsigned_abs();
                    match line.kind {
                        crate::LineKind::Spend | crate::LineKind::Capture => d.spent += amount,
                        crate::LineKind::Credit => d.credited += amount,
                        crate::LineKind::Debit => d.debited += amount,
                        crate::LineKind::Hold | crate::LineKind::Release => {}
                    }
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Compacts lines older than the retention into their users' opening
    /// balances. Returns how many lines went.
    pub(crate) fn expire(&self, now_ms: u64) -> Result<usize, NodeError> {
        let Some(retention) = self.retention_ms else {
            return Ok(0);
        };
        let cutoff = now_ms.saturating_sub(retention);
        let mut total = 0;
        loop {
            let alone = self.alone();
            let notes = self.store.scan_first(
                &keys::made(keys::STATEMENT_NOTE, 0, &[]),
                &keys::made(keys::STATEMENT_NOTE, cutoff, &[]),
                COMPACT_CHUNK,
            )?;
            if notes.is_empty() {
                return Ok(total);
            }
            let mut keys = Vec::new();
            for (_, value) in &notes {
                keys.extend(note_keys(value)?);
            }
            total += self.compact(&alone, notes.into_iter().map(|(k, _)| k).collect(), keys)?;
        }
    }

    /// Removes every line of `user`, carrying what they added up to forward:
    /// the statement restarts at today's balance. Returns how many went.
    pub(crate) fn remove_lines(&self, user: &str) -> Result<usize, NodeError> {
        let alone = self.alone();
        let lines = self.store.scan_range(
            &keys::statement_chunk(user, 0),
            &keys::statement_chunk(user, u64::MAX),
        )?;
        // Their commits' notes stay, naming lines that are gone; retention
        // deletes them in their time.
        self.compact(
            &alone,
            Vec::new(),
            lines.into_iter().map(|(k, _)| k).collect(),
        )
    }

    /// Holds other compactions and checkpoints off, from reading the lines
    /// to removing them: a compaction reads and rewrites carried-forward
    /// totals, and a checkpoint could merge a chunk read with one not read.
    fn alone(&self) -> Alone<'_> {
        let compacting = self.compacting.lock().unwrap_or_else(|p| p.into_inner());
        Alone {
            _compacting: compacting,
            _checkpoints: self.store.hold_checkpoints(),
        }
    }

    /// Deletes chunks of lines (by their `l` keys) and the `notes` that named
    /// them, adding the lines' amounts to their users' carried-forward totals,
    /// in one batch. Returns how many lines there were (a key may name a
    /// chunk already gone).
    fn compact(
        &self,
        _alone: &Alone<'_>,
        notes: Vec<Vec<u8>>,
        keys: Vec<Vec<u8>>,
    ) -> Result<usize, NodeError> {
        let mut carried: std::collections::BTreeMap<String, i128> = Default::default();
        let mut writes: Vec<Write> = notes.into_iter().map(|k| (k, None)).collect();
        let mut count = 0;
        for key in keys {
            if let Some(bytes) = self.store.get(&key)? {
                for (_, line) in decode_chunk(&key, &bytes)? {
                    count += 1;
                    let total = match carried.get(&line.user) {
                        Some(t) => *t,
                        None => self.carried(&line.user)?,
                    };
                    carried.insert(line.user, total + i128::from(line.amount));
                }
                writes.push((key, None));
            }
        }
        for (user, total) in carried {
            writes.push((keys::statement_carried(&user), Some(wire::encode(&total)?)));
        }
        self.store.write_now(writes, true)?;
        Ok(count)
    }
}

/// Proof that a compaction runs alone (see [`StatementStore::alone`]).
struct Alone<'a> {
    _compacting: MutexGuard<'a, ()>,
    _checkpoints: MutexGuard<'a, ()>,
}

/// The writes that store `lines` (with their `ids`, in order) for the
/// persist that carries them: each user's lines in chunks, and the note that
/// names the chunks.
pub(crate) fn line_writes(
    lines: &[StatementLine],
    ids: impl Iterator<Item = u64>,
) -> Result<Vec<Write>, NodeError> {
    // Users in order of their first line, each with their lines in order (so
    // with growing ids).
    let mut by_user: Vec<(&str, Vec<(u64, &StatementLine)>)> = Vec::with_capacity(lines.len());
    let mut index: Map<&str, usize> =
        Map::with_capacity_and_hasher(lines.len(), Default::default());
    for (line, id) in lines.iter().zip(ids) {
        let at = *index.entry(&line.user).or_insert_with(|| {
            by_user.push((&line.user, Vec::new()));
            by_user.len() - 1
        });
        by_user[at].1.push((id, line));
    }
    let mut writes = Vec::with_capacity(by_user.len() + 1);
    let mut note_key = None;
    // Each key named: two bytes of length, then about 30.
    let mut note = Vec::with_capacity(by_user.len() * 32);
    for (user, own) in &by_user {
        for chunk in own.chunks(LINES_PER_CHUNK) {
            let Some(&(first, line)) = chunk.first() else {
                continue;
            };
            let key = keys::statement_chunk(user, first);
            note_key.get_or_insert_with(|| {
                keys::made(keys::STATEMENT_NOTE, line.at.0, &first.to_be_bytes())
            });
            push_note_key(&mut note, &key)?;
            writes.push((key, Some(chunk_value(chunk.iter().copied())?)));
        }
    }
    if let Some(k) = note_key {
        writes.push((k, Some(note)));
    }
    Ok(writes)
}

/// The writes that store `pending` (the chunks and notes of many group
/// commits, as they logged them) in few keys: each user's consecutive
/// chunks in one while they hold at most [`LINES_PER_CHUNK`] lines, under
/// the first one's key; and one note naming them all, under the newest
/// commit's note's key (notes' keys begin with their time). Chunks join by
/// copying their lines' bytes: ids grow across commits, so one user's
/// chunks in key order hold their lines in id order.
pub(crate) fn merge_pending(pending: &Held) -> Result<Vec<Write>, NodeError> {
    let mut writes = Vec::new();
    let mut note = Vec::new();
    let mut run: Option<Run> = None;
    for (key, value) in pending.chunks_in_order() {
        let rewritten;
        let (value, (count, lines)) = match split_chunk(value) {
            Ok(parts) => (value.as_slice(), parts),
            Err(_) => {
                // Not in this layout (logged by an older build): read and
                // written again.
                let lines = decode_chunk(&key, value)?;
                rewritten = chunk_value(lines.iter().map(|(id, line)| (*id, line)))?;
                (rewritten.as_slice(), split_chunk(&rewritten)?)
            }
        };
        match run.as_mut() {
            Some(open) if open.takes(&key, count) => {
                open.count += count;
                open.value.extend_from_slice(lines);
            }
            _ => {
                if let Some(done) = run.take() {
                    writes.push(done.write(&mut note)?);
                }
                run = Some(Run {
                    key,
                    count,
                    value: value.to_vec(),
                });
            }
        }
    }
    if let Some(done) = run.take() {
        writes.push(done.write(&mut note)?);
    }
    // A statement key not shaped like a chunk's is never written; were one
    // held, it goes to sled as it came.
    for (key, value) in pending.odd_chunks() {
        writes.push((key.clone(), Some(value.clone())));
    }
    if let Some(key) = pending.newest_note()
        && !note.is_empty()
    {
        writes.push((key, Some(note)));
    }
    Ok(writes)
}

/// One user's chunks that a checkpoint merges into one.
struct Run {
    /// The key of the first chunk, which the merged one takes.
    key: Vec<u8>,
    /// Lines so far.
    count: usize,
    /// The merged chunk, its count byte not yet set.
    value: Vec<u8>,
}

impl Run {
    /// Whether the chunk under `key`, of `lines` lines, joins this run: the
    /// same user's, and the merged chunk stays within [`LINES_PER_CHUNK`].
    fn takes(&self, key: &[u8], lines: usize) -> bool {
        keys::split_statement_chunk(&self.key)
            .is_some_and(|(u, _)| Some(u) == keys::split_statement_chunk(key).map(|(u, _)| u))
            && self.count + lines <= LINES_PER_CHUNK
    }

    /// The merged chunk's write, its key added to `note`.
    fn write(mut self, note: &mut Vec<u8>) -> Result<Write, NodeError> {
        push_note_key(note, &self.key)?;
        self.value[COUNT_AT] = line_count(self.count)?;
        Ok((self.key, Some(self.value)))
    }
}

/// A line as a chunk stores it: its id, and the line without its user.
/// Written with the reference borrowed (`R` = `&str`), read owned (`String`).
#[derive(bincode::Encode, bincode::Decode)]
struct StoredLine<R> {
    id: u64,
    at: Millis,
    region: RegionId,
    kind: LineKind,
    amount: i64,
    calls: u64,
    held: u64,
    balance_after: u64,
    reference: Option<R>,
}

/// A [`StoredLine`] read back.
type ReadLine = StoredLine<String>;

impl ReadLine {
    fn into_line(self, user: String) -> (u64, StatementLine) {
        (
            self.id,
            StatementLine {
                user,
                at: self.at,
                region: self.region,
                kind: self.kind,
                amount: self.amount,
                calls: self.calls,
                held: self.held,
                balance_after: self.balance_after,
                reference: self.reference,
            },
        )
    }
}

/// A chunk's value: the header, then `lines` (one user's, at most
/// [`LINES_PER_CHUNK`], with their ids, in order), in one allocation.
fn chunk_value<'a>(
    lines: impl ExactSizeIterator<Item = (u64, &'a StatementLine)>,
) -> Result<Vec<u8>, NodeError> {
    // About 30 bytes a line without its user.
    let mut value = Vec::with_capacity(CHUNK_HEADER_BYTES + 32 * lines.len());
    value.extend_from_slice(&[CHUNK_TAG, wire::WIRE_VERSION, line_count(lines.len())?]);
    for (id, line) in lines {
        let stored = StoredLine {
            id,
            at: line.at,
            region: line.region,
            kind: line.kind,
            amount: line.amount,
            calls: line.calls,
            held: line.held,
            balance_after: line.balance_after,
            reference: line.reference.as_deref(),
        };
        wire::encode_bare_into(&mut value, &stored)?;
    }
    Ok(value)
}

/// A chunk's count byte: 1 to [`LINES_PER_CHUNK`].
fn line_count(lines: usize) -> Result<u8, NodeError> {
    u8::try_from(lines)
        .ok()
        .filter(|n| (1..=LINES_PER_CHUNK).contains(&usize::from(*n)))
        .ok_or_else(|| {
            NodeError::Corrupt(ledger_crdt::Error::Encode(format!(
                "a statement chunk of {lines} lines"
            )))
        })
}

/// A chunk in this layout's count and lines (their bytes), its header
/// checked: the tag, the wire version, a count of 1 to [`LINES_PER_CHUNK`].
fn split_chunk(value: &[u8]) -> Result<(usize, &[u8]), NodeError> {
    let bad = || NodeError::Corrupt(ledger_crdt::Error::Decode("a statement chunk".into()));
    let (header, lines) = value
        .split_first_chunk::<CHUNK_HEADER_BYTES>()
        .ok_or_else(bad)?;
    let [tag, version, count] = *header;
    if tag != CHUNK_TAG {
        return Err(bad());
    }
    if version != wire::WIRE_VERSION {
        return Err(NodeError::Corrupt(ledger_crdt::Error::UnsupportedVersion(
            version,
        )));
    }
    let count = usize::from(count);
    if !(1..=LINES_PER_CHUNK).contains(&count) {
        return Err(bad());
    }
    Ok((count, lines))
}

/// Adds `key` to a note: its length (2 bytes, big-endian), then it.
fn push_note_key(note: &mut Vec<u8>, key: &[u8]) -> Result<(), NodeError> {
    let len = u16::try_from(key.len()).map_err(|_| {
        NodeError::Corrupt(ledger_crdt::Error::Encode(
            "a statement key over 64 KiB".into(),
        ))
    })?;
    note.extend_from_slice(&len.to_be_bytes());
    note.extend_from_slice(key);
    Ok(())
}

/// The line keys a commit's note names.
fn note_keys(mut note: &[u8]) -> Result<Vec<Vec<u8>>, NodeError> {
    let bad = || NodeError::Corrupt(ledger_crdt::Error::Decode("a statement note".into()));
    let mut keys = Vec::new();
    while !note.is_empty() {
        let (len, rest) = note.split_first_chunk::<2>().ok_or_else(bad)?;
        let len = usize::from(u16::from_be_bytes(*len));
        let key = rest.get(..len).ok_or_else(bad)?;
        keys.push(key.to_vec());
        note = &rest[len..];
    }
    Ok(keys)
}

fn line_id(key: &[u8]) -> Result<u64, NodeError> {
    keys::split_statement_chunk(key)
        .map(|(_, id)| id)
        .ok_or_else(|| {
            NodeError::Corrupt(ledger_crdt::Error::Decode("a statement line key".into()))
        })
}

/// The lines under `key`, oldest first, each with its id: a chunk (in
/// either layout), or a lone line as stores before chunks wrote them.
fn decode_chunk(key: &[u8], bytes: &[u8]) -> Result<Vec<(u64, StatementLine)>, NodeError> {
    let lines = match bytes.split_first() {
        Some((&CHUNK_TAG, _)) => decode_lines(key, bytes)?,
        Some((&CHUNK_TAG_WITH_USERS, chunk)) => {
            wire::decode::<Vec<(u64, StatementLine)>, MAX_CHUNK_BYTES>(chunk)?
        }
        _ => {
            return Ok(vec![(
                line_id(key)?,
                wire::decode::<StatementLine, MAX_LINE_BYTES>(bytes)?,
            )]);
        }
    };
    let first = line_id(key)?;
    // Paging rests on this: ids grow within a chunk, from its key's.
    let ordered = lines.first().is_some_and(|(id, _)| *id == first)
        && lines.windows(2).all(|w| w[0].0 < w[1].0);
    if !ordered {
        return Err(NodeError::Corrupt(ledger_crdt::Error::Decode(
            "a statement chunk's ids".into(),
        )));
    }
    Ok(lines)
}

/// A chunk in this layout's lines, each given the user its key names.
fn decode_lines(key: &[u8], value: &[u8]) -> Result<Vec<(u64, StatementLine)>, NodeError> {
    let bad = |what: &str| NodeError::Corrupt(ledger_crdt::Error::Decode(what.into()));
    let user = keys::statement_chunk_user(key).ok_or_else(|| bad("a statement chunk's key"))?;
    let (count, mut rest) = split_chunk(value)?;
    let mut lines = Vec::with_capacity(count);
    for _ in 0..count {
        let (line, used) = wire::decode_bare_prefix::<ReadLine, MAX_LINE_BYTES>(rest)?;
        rest = rest.get(used..).ok_or_else(|| bad("a statement chunk"))?;
        lines.push(line.into_line(user.to_owned()));
    }
    if !rest.is_empty() {
        return Err(NodeError::Corrupt(ledger_crdt::Error::TrailingBytes(
            rest.len(),
        )));
    }
    Ok(lines)
}

fn clamp(n: i128) -> u64 {
    u64::try_from(n.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Persist;

    fn line(
        user: &str,
        at_ms: u64,
        kind: LineKind,
        amount: i64,
        balance_after: u64,
    ) -> StatementLine {
        StatementLine {
            user: user.into(),
            at: Millis(at_ms),
            region: RegionId(1),
            kind,
            amount,
            calls: u64::from(kind == LineKind::Spend),
            held: 0,
            balance_after,
            reference: None,
        }
    }

    /// The statements in `store`, with a welcome grant of 150.
    fn over(store: &Store, retention_ms: Option<u64>) -> StatementStore<'_> {
        static COMPACTING: Mutex<()> = Mutex::new(());
        StatementStore {
            store,
            grant: 150,
            retention_ms,
            compacting: &COMPACTING,
        }
    }

    /// A store holding `lines`, written the way a group commit writes them.
    fn store_with(dir: &std::path::Path, lines: Vec<StatementLine>) -> Store {
        let store = Store::open(dir, 1 << 20).unwrap();
        let persist = Persist {
            statement: lines,
            ..Persist::default()
        };
        store.persist(&persist, Vec::new()).unwrap();
        store
    }

    /// A store where another user's commit took line ids 0 and 1.
    fn store_with_ids_0_and_1_taken(dir: &std::path::Path) -> Store {
        store_with(
            dir,
            vec![
                line("w", 1, LineKind::Spend, -1, 149),
                line("w", 2, LineKind::Spend, -1, 148),
            ],
        )
    }

    /// Every line of `user`'s statement, newest first, as its balance after.
    fn balances_after(statements: &StatementStore<'_>, user: &str, limit: usize) -> Vec<u64> {
        all(statements, user, limit)
            .iter()
            .map(|(_, l)| l.balance_after)
            .collect()
    }

    fn all(statements: &StatementStore<'_>, user: &str, limit: usize) -> Vec<(u64, StatementLine)> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = statements.page(user, cursor, limit).unwrap();
            out.extend(page.lines);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return out,
            }
        }
    }

    #[test]
    fn pages_are_newest_first_and_never_skip_or_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let lines = (0..23)
            .map(|i| line("u", 1_000 + i, LineKind::Spend, -1, 149 - i))
            .collect();
        let store = store_with(dir.path(), lines);
        let statements = over(&store, None);
        let got = all(&statements, "u", 5);
        assert_eq!(got.len(), 23);
        assert!(
            got.windows(2).all(|w| w[0].0 > w[1].0),
            "ids strictly decrease"
        );
        assert_eq!(got[0].1.balance_after, 127, "the newest first");
        // Another user's lines (a longer id with the same prefix) stay apart.
        store
            .persist(
                &Persist {
                    statement: vec![line("u2", 5, LineKind::Credit, 10, 160)],
                    ..Persist::default()
                },
                Vec::new(),
            )
            .unwrap();
        assert_eq!(all(&statements, "u", 7).len(), 23);
        assert_eq!(all(&statements, "u2", 7).len(), 1);
    }

    #[test]
    fn a_commit_stores_each_users_lines_in_chunks_that_page_like_lines() {
        let dir = tempfile::tempdir().unwrap();
        // 150 lines of u, interleaved with 10 of v, in one commit: u's go
        // in chunks of 64, 64 and 22, v's in one.
        let mut lines = Vec::new();
        for i in 0..150 {
            lines.push(line("u", 1_000 + i, LineKind::Spend, -1, 1_000 - i));
            if i % 15 == 0 {
                lines.push(line("v", 1_000 + i, LineKind::Credit, 1, 151 + i));
            }
        }
        let writes = line_writes(&lines, 1..).unwrap();
        assert_eq!(writes.len(), 3 + 1 + 1, "four chunks and one note");
        let store = store_with(dir.path(), lines);
        let statements = over(&store, None);
        assert_eq!(store.scan(keys::STATEMENT_CHUNK).unwrap().len(), 4);
        for limit in [1, 7, 64, 65, 200] {
            let got = all(&statements, "u", limit);
            let balances: Vec<u64> = got.iter().map(|(_, l)| l.balance_after).collect();
            // Newest first: the last line left 851.
            assert_eq!(
                balances,
                (851..=1_000).collect::<Vec<u64>>(),
                "limit {limit}"
            );
            assert!(got.windows(2).all(|w| w[0].0 > w[1].0));
        }
        assert_eq!(all(&statements, "v", 3).len(), 10);
        // A cursor inside a chunk pages on from the line below it.
        let first = statements.page("u", None, 100).unwrap();
        let cursor = first.next.unwrap();
        let rest = statements.page("u", Some(cursor), 100).unwrap();
        assert_eq!(rest.lines.len(), 50);
        assert!(rest.lines.iter().all(|(id, _)| *id < cursor));
        assert_eq!(rest.next, None);
        // Removal counts lines, not chunks.
        assert_eq!(statements.remove_lines("u").unwrap(), 150);
        assert_eq!(statements.opening("u").unwrap(), 0);
    }

    /// Commits of `u` (40, 20 and 10 lines) and of `v` (one line each), the
    /// way three group commits write them.
    fn three_commits(store: &Store) {
        for (commit, n) in [40u64, 20, 10].into_iter().enumerate() {
            let at = 1_000 * (commit as u64 + 1);
            let mut lines: Vec<StatementLine> = (0..n)
                .map(|i| line("u", at + i, LineKind::Spend, -1, 10_000 - at - i))
                .collect();
            lines.push(line("v", at, LineKind::Credit, 1, 150 + at));
            let persist = Persist {
                statement: lines,
                ..Persist::default()
            };
            store.persist(&persist, Vec::new()).unwrap();
        }
    }

    /// Every line of `u` and of `v`, paged at several limits (all must agree).
    fn every_line(statements: &StatementStore<'_>) -> Vec<(u64, StatementLine)> {
        let whole = all(statements, "u", 1_000);
        for limit in [1, 7, 39, 64, 65] {
            assert_eq!(all(statements, "u", limit), whole, "limit {limit}");
        }
        let mut out = whole;
        out.extend(all(statements, "v", 2));
        out
    }

    #[test]
    fn a_checkpoint_merges_each_users_chunks_and_every_read_stays_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        three_commits(&store);
        let statements = over(&store, None);
        let before = every_line(&statements);
        assert_eq!(before.len(), 70 + 3);
        assert_eq!(
            store.scan(keys::STATEMENT_CHUNK).unwrap().len(),
            6,
            "a chunk per user and commit"
        );
        assert_eq!(
            store.scan(keys::STATEMENT_NOTE).unwrap().len(),
            3,
            "a note per commit"
        );
        store.checkpoint().unwrap();
        assert_eq!(every_line(&statements), before);
        // u: 40 + 20 in one chunk, 10 in another (70 is over 64); v: one.
        assert_eq!(store.scan(keys::STATEMENT_CHUNK).unwrap().len(), 3);
        let notes = store.scan(keys::STATEMENT_NOTE).unwrap();
        assert_eq!(notes.len(), 1, "one note, under the newest commit's key");
        assert!(
            notes[0]
                .0
                .starts_with(&keys::made(keys::STATEMENT_NOTE, 3_000, &[]))
        );
        assert_eq!(note_keys(&notes[0].1).unwrap().len(), 3);
        // A restart reads the same from sled alone.
        drop(store);
        let store = Store::reopen(dir.path());
        let statements = over(&store, None);
        assert_eq!(every_line(&statements), before);
        // Retention goes by the merged note: nothing before the newest
        // commit's time; then every line, carried forward.
        let statements = over(&store, Some(10));
        assert_eq!(statements.expire(3_009).unwrap(), 0);
        assert_eq!(statements.expire(3_011).unwrap(), 73);
        assert_eq!(statements.opening("u").unwrap(), 150 - 70);
    }

    #[test]
    fn a_crash_after_a_merge_but_before_the_log_went_replays_to_the_same_lines() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        three_commits(&store);
        let before = every_line(&over(&store, None));
        // sled holds the merged chunks, flushed; the log holds the commits.
        store.merge_without_forgetting().unwrap();
        drop(store);
        let store = Store::reopen(dir.path());
        let statements = over(&store, None);
        assert_eq!(every_line(&statements), before, "no line lost or doubled");
        // Erasure and the carried-forward total agree with the lines.
        assert_eq!(statements.remove_lines("u").unwrap(), 70);
        assert_eq!(statements.opening("u").unwrap(), 80);
        assert!(all(&statements, "u", 10).is_empty());
    }

    #[test]
    fn reads_during_commits_and_checkpoints_never_lose_or_double_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let mut reads = 0;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // Line n (from 1) leaves 10,000 - n; commits of 1 to 3 lines,
                // a checkpoint every 7 commits.
                let mut n = 0u64;
                for commit in 0..300u64 {
                    let lines = (0..=commit % 3)
                        .map(|_| {
                            n += 1;
                            line("u", n, LineKind::Spend, -1, 10_000 - n)
                        })
                        .collect();
                    let persist = Persist {
                        statement: lines,
                        ..Persist::default()
                    };
                    store.persist(&persist, Vec::new()).unwrap();
                    if commit % 7 == 6 {
                        store.checkpoint().unwrap();
                    }
                }
                done.store(true, std::sync::atomic::Ordering::Release);
            });
            while !done.load(std::sync::atomic::Ordering::Acquire) || reads == 0 {
                let got = all(&over(&store, None), "u", 7);
                // Newest first, with every line from the first on: the
                // balances run up by one to 9,999.
                let balances: Vec<u64> = got.iter().map(|(_, l)| l.balance_after).collect();
                let newest = 10_000 - balances.len() as u64;
                assert_eq!(balances, (newest..10_000).collect::<Vec<u64>>());
                assert!(got.windows(2).all(|w| w[0].0 > w[1].0));
                reads += 1;
            }
        });
        assert_eq!(all(&over(&store, None), "u", 50).len(), 600);
        assert!(reads > 1);
    }

    #[test]
    fn erasing_lines_that_wait_for_a_checkpoint_keeps_them_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        three_commits(&store);
        let statements = over(&store, None);
        assert_eq!(statements.remove_lines("u").unwrap(), 70);
        store.checkpoint().unwrap();
        assert!(all(&statements, "u", 10).is_empty(), "not written back");
        assert_eq!(all(&statements, "v", 10).len(), 3);
        assert_eq!(statements.opening("u").unwrap(), 80);
        drop(store);
        let store = Store::reopen(dir.path());
        assert!(all(&over(&store, None), "u", 10).is_empty());
    }

    #[test]
    fn lines_stored_one_per_key_before_chunks_still_read() {
        let dir = tempfile::tempdir().unwrap();
        // u's old lines have ids 0 and 1.
        let store = store_with_ids_0_and_1_taken(dir.path());
        let old = |id: u64, l: &StatementLine| {
            (
                keys::statement_chunk("u", id),
                Some(wire::encode(l).unwrap()),
            )
        };
        let (a, b) = (
            line("u", 5, LineKind::Spend, -1, 149),
            line("u", 6, LineKind::Spend, -1, 148),
        );
        store.write_now(vec![old(0, &a), old(1, &b)], true).unwrap();
        // A newer commit adds a chunk after them.
        let persist = Persist {
            statement: vec![line("u", 7, LineKind::Credit, 10, 158)],
            ..Persist::default()
        };
        store.persist(&persist, Vec::new()).unwrap();
        let statements = over(&store, None);
        assert_eq!(balances_after(&statements, "u", 2), vec![158, 148, 149]);
        assert_eq!(statements.remove_lines("u").unwrap(), 3);
        assert_eq!(statements.opening("u").unwrap(), 158);
    }

    #[test]
    fn a_chunk_whose_ids_do_not_grow_from_its_key_is_refused() {
        let l = line("u", 5, LineKind::Spend, -1, 149);
        let key = |id| keys::statement_chunk("u", id);
        // Both layouts: lines without their user, and whole lines.
        let chunk = |lines: Vec<(u64, StatementLine)>| {
            chunk_value(lines.iter().map(|(id, l)| (*id, l))).unwrap()
        };
        let with_users = |lines: Vec<(u64, StatementLine)>| {
            let mut v = vec![CHUNK_TAG_WITH_USERS];
            v.extend(wire::encode(&lines).unwrap());
            v
        };
        for layout in [chunk, with_users] {
            let good = layout(vec![(9, l.clone()), (12, l.clone())]);
            assert_eq!(
                decode_chunk(&key(9), &good).unwrap(),
                vec![(9, l.clone()), (12, l.clone())]
            );
            assert!(decode_chunk(&key(8), &good).is_err(), "not its key");
            let shuffled = layout(vec![(9, l.clone()), (9, l.clone())]);
            assert!(decode_chunk(&key(9), &shuffled).is_err());
        }
        assert!(decode_chunk(&key(9), &with_users(Vec::new())).is_err());
        assert!(decode_chunk(&key(9), &[CHUNK_TAG_WITH_USERS, 1, 200]).is_err());
        // A chunk cut short, with bytes after its lines, or a count of none
        // or too many, is refused, never read as fewer lines.
        let good = chunk(vec![(9, l.clone()), (12, l.clone())]);
        for cut in 1..good.len() {
            assert!(decode_chunk(&key(9), &good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode_chunk(&key(9), &longer).is_err());
        for count in [0, 3, 65, 255] {
            let mut bad = good.clone();
            bad[COUNT_AT] = count;
            assert!(decode_chunk(&key(9), &bad).is_err(), "count {count}");
        }
    }

    #[test]
    fn a_line_stores_no_user_and_a_chunk_takes_the_user_its_key_names() {
        let mut l = line(
            "a-rather-long-user-name-0123456789",
            5,
            LineKind::Spend,
            -1,
            149,
        );
        l.reference = Some("key-1".into());
        let chunk = chunk_value([(9, &l)].into_iter()).unwrap();
        let whole = wire::encode(&vec![(9u64, l.clone())]).unwrap();
        assert!(
            chunk.len() + l.user.len() <= whole.len() + 2,
            "{} against {}",
            chunk.len(),
            whole.len()
        );
        let key = keys::statement_chunk(&l.user, 9);
        assert_eq!(decode_chunk(&key, &chunk).unwrap(), vec![(9, l.clone())]);
        // Another user's key gives the line that user's name: the key is
        // the only place the name is kept.
        let other = decode_chunk(&keys::statement_chunk("b", 9), &chunk).unwrap();
        assert_eq!(other[0].1.user, "b");
    }

    #[test]
    fn a_checkpoint_joins_chunks_in_either_layout_into_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_ids_0_and_1_taken(dir.path());
        // A chunk of whole lines, as an older build logged them, waits
        // beside two commits' chunks in this layout.
        let first = line("u", 5, LineKind::Spend, -1, 149);
        let mut old = vec![CHUNK_TAG_WITH_USERS];
        old.extend(wire::encode(&vec![(1u64, first.clone())]).unwrap());
        let key = keys::statement_chunk("u", 1);
        store
            .persist(&Persist::default(), vec![(key.clone(), Some(old))])
            .unwrap();
        let later = [
            line("u", 6, LineKind::Spend, -1, 148),
            line("u", 7, LineKind::Credit, 10, 158),
        ];
        for l in &later {
            let persist = Persist {
                statement: vec![l.clone()],
                ..Persist::default()
            };
            store.persist(&persist, Vec::new()).unwrap();
        }
        store.checkpoint().unwrap();
        let merged = store.get(&key).unwrap().expect("the merged chunk");
        assert_eq!(merged[0], CHUNK_TAG, "written in this layout");
        assert_eq!(
            decode_chunk(&key, &merged).unwrap(),
            vec![(1, first), (2, later[0].clone()), (3, later[1].clone())]
        );
        assert_eq!(
            balances_after(&over(&store, None), "u", 2),
            vec![158, 148, 149]
        );
    }

    #[test]
    fn retention_carries_old_lines_forward_and_the_statement_still_adds_up() {
        let dir = tempfile::tempdir().unwrap();
        let day = DAY_MS;
        let lines = vec![
            line("u", day, LineKind::Spend, -1, 149),
            line("u", 2 * day, LineKind::Credit, 50, 199),
            line("u", 30 * day, LineKind::Spend, -3, 196),
            line("u", 31 * day, LineKind::Debit, -6, 190),
        ];
        // One commit each: retention works to the nearest commit.
        let store = store_with(dir.path(), Vec::new());
        for l in lines {
            let persist = Persist {
                statement: vec![l],
                ..Persist::default()
            };
            store.persist(&persist, Vec::new()).unwrap();
        }
        let statements = over(&store, Some(10 * day));
        let adds_up = |s: &StatementStore<'_>| {
            let kept = all(s, "u", 2);
            let total: i64 = kept.iter().map(|(_, l)| l.amount).sum();
            (
                s.opening("u").unwrap(),
                kept.len(),
                i128::from(s.opening("u").unwrap()) + i128::from(total),
            )
        };
        assert_eq!(adds_up(&statements), (150, 4, 190));
        // At day 35, lines before day 25 go; their +49 is carried forward.
        assert_eq!(statements.expire(35 * day).unwrap(), 2);
        assert_eq!(adds_up(&statements), (199, 2, 190));
        assert_eq!(statements.expire(35 * day).unwrap(), 0, "nothing twice");
        // Removal carries the rest: the statement restarts at the balance.
        assert_eq!(statements.remove_lines("u").unwrap(), 2);
        assert_eq!(adds_up(&statements), (190, 0, 190));
        // The notes of the erased lines go in their time, carrying nothing.
        assert_eq!(statements.expire(100 * day).unwrap(), 0);
        assert!(store.scan(keys::STATEMENT_NOTE).unwrap().is_empty());
        assert_eq!(adds_up(&statements), (190, 0, 190));
    }

    #[test]
    fn usage_counts_calls_and_tokens_per_utc_day() {
        let dir = tempfile::tempdir().unwrap();
        let day = DAY_MS;
        let lines = vec![
            line("u", 10 * day + 5, LineKind::Spend, -1, 149),
            line("u", 11 * day + 5, LineKind::Spend, -1, 148),
            line("u", 11 * day + 9, LineKind::Capture, -5, 143),
            line("u", 11 * day + 10, LineKind::Credit, 20, 163),
            line("u", 11 * day + 11, LineKind::Hold, 0, 163),
        ];
        let store = store_with(dir.path(), lines);
        let statements = over(&store, None);
        let usage = statements.usage("u", 2, 11 * day + 100).unwrap();
        assert_eq!(
            usage,
            vec![
                DayUsage {
                    day: 11,
                    calls: 1,
                    spent: 6,
                    credited: 20,
                    debited: 0
                },
                DayUsage {
                    day: 10,
                    calls: 1,
                    spent: 1,
                    credited: 0,
                    debited: 0
                },
            ]
        );
        assert_eq!(statements.usage("u", 1, 11 * day + 100).unwrap().len(), 1);
    }
}
