//! The write-ahead log in front of sled.
//!
//! Why it exists: sled makes a batch atomic, and a flush durable, by sealing
//! its log buffer and handing it to its I/O thread pool, and that pool wakes
//! all seven of its threads (`notify_all`) for every buffer. One group commit
//! through sled cost about 3.5 context switches per request at 3,300
//! requests/s, a third of a spend's CPU, before its `fdatasync`. With this
//! log, a group commit appends one record (all of its writes) to a plain file
//! and `fdatasync`s it, then applies to sled, without flushing, the writes
//! something reads while the node runs; the ledger's own keys, read only at
//! startup, wait for the checkpoint, latest value per key. A checkpoint,
//! about once a second and off the spend path, applies those, flushes sled,
//! and deletes the files it covers.
//!
//! Files: `wal.<generation>` in the data directory, generation in decimal.
//! A file opens with [`MAGIC`] and its generation (u64 LE); then records,
//! each `length: u32 LE | crc32: u32 LE | payload`, the CRC over the
//! generation (u64 LE) and the payload; the payload is the writes, each
//! `key length: u32 LE | key | 0` (remove) or
//! `key length | key | 1 | value length: u32 LE | value` (insert). Files
//! from before the header (no magic) hold records whose CRC is over the
//! payload alone; recovery reads them too.
//!
//! Files are reused: a checkpoint renames the newest file it covers to
//! `wal.spare` instead of deleting it, and the next file is that one, written
//! from its start. An `fdatasync` that appends must also write the file's
//! new size (the inode; on a journaling filesystem, a journal commit), which
//! on this VM (ext4 without a journal) cost 30 % more CPU and latency per
//! sync. So a spare shorter than twice what its file held is first
//! lengthened with zeros, off the spend path ([`Headroom`], `wal.growing`
//! meanwhile): growing load then overwrites too. One that overwrites still
//! writes the inode whenever the coarse clock ticked since the last write,
//! which moved the file's modification time: ext4 without a journal writes a
//! dirty inode at every `fdatasync`. That is a quarter to half of the SLA
//! run's syncs; no flag on the file turns it off, nor does `lazytime` on
//! this VM's kernel (6.18); a journal does (README.md, Durability;
//! benches/README.md, sessions 17 and 35).
//! A reused file still holds its old records after the new ones; their CRCs
//! carry the old generation, so they end the file like a torn record.
//! Recovery deletes any spare (and `wal.growing`): generations restart after
//! a restart that found no files, and an old file must never pass for a new
//! one of the same number.
//!
//! Recovery, at every open of sled: every whole record of every file, oldest
//! generation first, is applied again (writes are whole values, so applying
//! one twice changes nothing); a file ends at its first record that is torn,
//! corrupt or an older generation's. Then sled is flushed and the files
//! deleted.
//!
//! Every write to sled goes through the log, in the order sled saw it, so
//! that recovery never replays an older value over a newer one. A direct
//! write that must be durable at once is a record of its own; one that may
//! wait ([`Log::defer`]) joins the next record, ahead of that record's own
//! writes, as it used to ride the next flush of sled.

use crate::hashing::Map;
use crate::shell::store::{Write, batch_of};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The prefix of a log file's name.
const FILE_PREFIX: &str = "wal.";
/// The name of a file kept for reuse.
const SPARE: &str = "wal.spare";
/// The first bytes of a file, before its generation.
const MAGIC: &[u8; 8] = b"MAASWAL2";
/// Bytes before a file's first record: the magic and the generation.
const FILE_HEADER_BYTES: usize = 16;
/// Bytes before a record's payload: its length and CRC.
const HEADER_BYTES: usize = 8;
/// A file larger than this (a burst's) is deleted, not kept for reuse.
const MAX_SPARE_BYTES: u64 = 64 * 1024 * 1024;
/// The name of a file being lengthened before it becomes the spare.
const GROWING: &str = "wal.growing";
/// A spare is lengthened to twice what its file held last time, at most
/// this (within [`MAX_SPARE_BYTES`], so that it is kept).
const MAX_HEADROOM_BYTES: u64 = 32 * 1024 * 1024;
const _: () = assert!(MAX_HEADROOM_BYTES <= MAX_SPARE_BYTES);
/// Zeros synced at once while lengthening a spare: a group commit's sync
/// waits behind at most this much of them.
const ZEROS_AT_ONCE: u64 = 256 * 1024;
/// Zeros written by one call: a page. A larger write caches its pages as
/// large folios, and every record written into one later dirties (and is
/// counted in `/proc/<pid>/io` as) the whole folio: at a million users the
/// log's `write_bytes` grew fourfold, though the disk saw the same 4 KiB
/// writes (benches/README.md, session 35).
const ZEROS_PER_WRITE: usize = 4096;

/// The log of one data directory: where group commits append, and which
/// files still hold writes that sled has not made durable.
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    /// The file appended to; `None` until the next append opens one (after a
    /// rotation or a failed append).
    current: Option<Current>,
    /// Older files whose writes sled has not yet made durable.
    sealed: Vec<u64>,
    next_generation: u64,
    /// Where each sealed file's records end, for [`Log::forget`] to size
    /// the spare by.
    ends: Map<u64, u64>,
    /// Writes already applied to sled that join the next record.
    deferred: Vec<Write>,
    /// Logged writes not yet applied to sled, the latest value per key: a
    /// checkpoint applies them, so a key written many times a second is
    /// written to sled once (see [`Log::hold_back`]).
    unapplied: Map<Vec<u8>, Option<Vec<u8>>>,
}

#[derive(Debug)]
struct Current {
    file: File,
    generation: u64,
    /// Bytes of records written (the file header not counted).
    bytes: u64,
    /// Where the next record goes (a reused file is longer).
    offset: u64,
}

/// What recovery found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Files read.
    pub files: usize,
    /// Whole records applied again.
    pub records: usize,
    /// Files whose records ended before the file did: at a torn or corrupt
    /// record, or (in a reused file, the usual case) at an older
    /// generation's.
    pub torn: usize,
}

impl Log {
    /// Applies every logged write in `dir` to `db`, makes it durable there,
    /// and deletes the files: the log of a freshly opened database.
    pub(crate) fn recover(dir: &Path, db: &sled::Db) -> Result<(Log, Recovered), crate::NodeError> {
        let generations = generations(dir)?;
        remove_if_present(&dir.join(SPARE))?;
        remove_if_present(&dir.join(GROWING))?;
        let mut found = Recovered::default();
        for &generation in &generations {
            let bytes = std::fs::read(file_path(dir, generation))?;
            let (records, torn) = file_records(&bytes, generation);
            found.files += 1;
            found.records += records.len();
            found.torn += usize::from(torn);
            for writes in records {
                db.apply_batch(batch_of(writes))?;
            }
        }
        let mut log = Log {
            dir: dir.to_owned(),
            current: None,
            sealed: generations.clone(),
            next_generation: generations.last().map_or(1, |g| g + 1),
            ends: Map::default(),
            deferred: Vec::new(),
            unapplied: Map::default(),
        };
        if !generations.is_empty() {
            db.flush()?;
            // Deleted, not reused: an old file may predate the header.
            for &generation in &generations {
                remove_if_present(&file_path(dir, generation))?;
            }
            sync_dir(dir)?;
            log.sealed.clear();
        }
        Ok((log, found))
    }

    /// Appends one record of the deferred writes and `writes`, and makes it
    /// durable. After a failure the file is set aside (its whole records
    /// still count at recovery) and the next append starts a new one, so no
    /// record follows a torn one.
    pub(crate) fn append(&mut self, writes: &[Write]) -> io::Result<()> {
        if self.current.is_none() {
            let generation = self.next_generation;
            let path = file_path(&self.dir, generation);
            let spare = self.dir.join(SPARE);
            let file = match std::fs::rename(&spare, &path) {
                Ok(()) => OpenOptions::new().write(true).open(&path)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&path)?,
                Err(e) => return Err(e),
            };
            self.next_generation += 1;
            // The file's name must be durable before anything in it counts.
            sync_dir(&self.dir)?;
            self.current = Some(Current {
                file,
                generation,
                bytes: 0,
                offset: 0,
            });
        }
        let Some(current) = self.current.as_mut() else {
            return Err(io::Error::other("no log file"));
        };
        let mut out = Vec::new();
        if current.offset == 0 {
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&current.generation.to_le_bytes());
        }
        let header = out.len();
        encode_into(&mut out, current.generation, &self.deferred, writes)?;
        let written = current
            .file
            .write_all_at(&out, current.offset)
            .and_then(|()| current.file.sync_data());
        match written {
            Ok(()) => {
                current.bytes += (out.len() - header) as u64;
                current.offset += out.len() as u64;
                self.deferred.clear();
                Ok(())
            }
            Err(e) => {
                self.seal_current();
                Err(e)
            }
        }
    }

    /// Logs `writes` (already applied to sled) with the next record: durable
    /// once that record is.
    pub(crate) fn defer(&mut self, writes: &[Write]) {
        self.deferred.extend_from_slice(writes);
    }

    /// Keeps a logged write of `key` out of sled until the next checkpoint
    /// ([`Log::take_unapplied`]); a later write of a key replaces an earlier.
    /// Only for keys nothing reads from sled while the node runs.
    pub(crate) fn hold_back(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.unapplied.insert(key, value);
    }

    /// The held-back writes, for a checkpoint to apply before it flushes.
    pub(crate) fn take_unapplied(&mut self) -> Map<Vec<u8>, Option<Vec<u8>>> {
        std::mem::take(&mut self.unapplied)
    }

    /// Whether writes wait for the next record.
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Whether every logged write is already durable in sled.
    pub(crate) fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.current.as_ref().is_none_or(|c| c.bytes == 0)
    }

    /// Closes the current file: later appends go to a new one. Returns every
    /// generation a checkpoint must cover (flush sled, then
    /// [`Log::forget`] them).
    pub(crate) fn rotate(&mut self) -> Vec<u64> {
        self.seal_current();
        self.sealed.clone()
    }

    fn seal_current(&mut self) {
        if let Some(current) = self.current.take()
            && !self.sealed.contains(&current.generation)
        {
            self.sealed.push(current.generation);
            self.ends.insert(current.generation, current.offset);
        }
    }

    /// Deletes the files of `generations`, whose writes sled has made
    /// durable, and makes the deletion durable: a file that came back after a
    /// crash would replay old values over newer direct writes.
    /// The newest one is kept as the spare, for the next file to reuse; if it
    /// is shorter than twice what it held, it comes back as a [`Headroom`]
    /// to lengthen (off the log's lock) before it becomes the spare.
    pub(crate) fn forget(&mut self, generations: &[u64]) -> io::Result<Option<Headroom>> {
        let spare = self.dir.join(SPARE);
        let growing = self.dir.join(GROWING);
        let mut keep = !spare.exists() && !growing.exists();
        let mut headroom = None;
        for &generation in generations.iter().rev() {
            let path = file_path(&self.dir, generation);
            let size = match std::fs::metadata(&path) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if keep && size <= MAX_SPARE_BYTES {
                let wanted = self
                    .ends
                    .get(&generation)
                    .map_or(0, |&end| spare_length(end));
                if size < wanted {
                    std::fs::rename(&path, &growing)?;
                    headroom = Some(Headroom {
                        growing: growing.clone(),
                        spare: spare.clone(),
                        from: size,
                        to: wanted,
                    });
                } else {
                    std::fs::rename(&path, &spare)?;
                }
                keep = false;
            } else {
                remove_if_present(&path)?;
            }
        }
        sync_dir(&self.dir)?;
        self.sealed.retain(|g| !generations.contains(g));
        self.ends.retain(|g, _| !generations.contains(g));
        Ok(headroom)
    }
}

/// A file that [`Log::forget`] covered, to be lengthened with zeros before
/// it becomes the spare, so that the file reusing it is overwritten and not
/// appended to. An `fdatasync` that moves a file's end writes its inode as
/// well (on this VM's ext4, one more synchronous request; with a journal, a
/// commit): while load grows past what the spare held, about half of a
/// closed loop's syncs did (benches/README.md, session 35). The price is
/// writing the zeros, once per rise in load, a slice at a time, so that a
/// group commit's sync waits behind one slice, not all of them.
#[derive(Debug)]
#[must_use = "the file becomes the spare only once lengthened"]
pub(crate) struct Headroom {
    growing: PathBuf,
    spare: PathBuf,
    from: u64,
    to: u64,
}

impl Headroom {
    /// Writes the zeros and makes them durable, a slice at a time (so the
    /// first `fdatasync` of the reusing file neither writes them nor
    /// allocates their blocks, and no sync waits behind all of them), then
    /// renames the file to the spare. It holds only writes sled has made
    /// durable, so on failure (a full disk, say) it is deleted and the next
    /// file starts empty, as it would without a spare.
    pub(crate) fn make(self) -> io::Result<()> {
        let made = self
            .lengthen()
            .and_then(|()| std::fs::rename(&self.growing, &self.spare));
        if made.is_err() {
            let _ = remove_if_present(&self.growing);
        }
        made
    }

    fn lengthen(&self) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(&self.growing)?;
        let zeros = [0; ZEROS_PER_WRITE];
        let mut at = self.from;
        while at < self.to {
            let slice_end = (at + ZEROS_AT_ONCE).min(self.to);
            while at < slice_end {
                let n = (slice_end - at).min(ZEROS_PER_WRITE as u64);
                file.write_all_at(&zeros[..n as usize], at)?;
                at += n;
            }
            file.sync_data()?;
        }
        Ok(())
    }
}

/// How long a spare should be whose file's records ended at `end`: room for
/// twice as much, so that load may double before the file grows again.
fn spare_length(end: u64) -> u64 {
    end.saturating_mul(2).min(MAX_HEADROOM_BYTES)
}

/// The generations of the log files in `dir`, oldest first.
fn generations(dir: &Path) -> io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let generation = name
            .to_str()
            .and_then(|n| n.strip_prefix(FILE_PREFIX))
            .and_then(|g| g.parse::<u64>().ok());
        if let Some(generation) = generation {
            found.push(generation);
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn file_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{generation}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Appends to `out` one record of `first`, then `then`, for the file of
/// `generation`: header and payload.
fn encode_into(
    out: &mut Vec<u8>,
    generation: u64,
    first: &[Write],
    then: &[Write],
) -> io::Result<()> {
    let too_big = || io::Error::other("a group commit of 4 GiB or more does not fit a log record");
    let writes = || first.iter().chain(then);
    let size: usize = writes()
        .map(|(k, v)| 5 + k.len() + v.as_ref().map_or(0, |v| 4 + v.len()))
        .sum();
    let start = out.len();
    out.reserve(HEADER_BYTES + size);
    out.extend_from_slice(&u32::try_from(size).map_err(|_| too_big())?.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for (k, v) in writes() {
        out.extend_from_slice(&u32::try_from(k.len()).map_err(|_| too_big())?.to_le_bytes());
        out.extend_from_slice(k);
        match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(
                    &u32::try_from(v.len()).map_err(|_| too_big())?.to_le_bytes(),
                );
                out.extend_from_slice(v);
            }
        }
    }
    let crc = crc(Some(generation), &out[start + HEADER_BYTES..]);
    out[start + 4..start + HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A record's CRC: over its file's generation and its payload, or over the
/// payload alone in a file from before the header (`None`).
fn crc(generation: Option<u64>, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if let Some(generation) = generation {
        hasher.update(&generation.to_le_bytes());
    }
    hasher.update(payload);
    hasher.finalize()
}

/// The whole records of the file of `generation`, and whether they ended
/// before the file did (see [`records`]). A file whose header names another
/// generation is a reused one that a crash caught before its first record:
/// it holds none.
fn file_records(bytes: &[u8], generation: u64) -> (Vec<Vec<Write>>, bool) {
    match bytes.split_first_chunk::<FILE_HEADER_BYTES>() {
        Some((header, rest)) if header.starts_with(MAGIC) => {
            if header[MAGIC.len()..] == generation.to_le_bytes() {
                records(rest, Some(generation))
            } else {
                (Vec::new(), true)
            }
        }
        _ if bytes.starts_with(MAGIC) => (Vec::new(), true),
        _ => records(bytes, None),
    }
}

/// The whole records at the start of `bytes` (CRCs over `generation` and
/// the payload, see [`crc`]), and whether they ended before the bytes did: a
/// torn or corrupt record, or an older generation's in a reused file.
fn records(mut bytes: &[u8], generation: Option<u64>) -> (Vec<Vec<Write>>, bool) {
    let mut found = Vec::new();
    while !bytes.is_empty() {
        let Some((header, rest)) = bytes.split_first_chunk::<HEADER_BYTES>() else {
            return (found, true);
        };
        let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
        let length = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        let Some((payload, rest)) = rest.split_at_checked(length) else {
            return (found, true);
        };
        if self::crc(generation, payload) != crc {
            return (found, true);
        }
        let Some(writes) = decode(payload) else {
            return (found, true);
        };
        found.push(writes);
        bytes = rest;
    }
    (found, false)
}

/// The writes of one payload; `None` if it does not parse exactly.
fn decode(mut payload: &[u8]) -> Option<Vec<Write>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(taken)
    }
    fn length(bytes: &mut &[u8]) -> Option<usize> {
        let raw = take(bytes, 4)?;
        Some(u32::from_le_bytes(raw.try_into().ok()?) as usize)
    }
    let mut writes = Vec::new();
    while !payload.is_empty() {
        let key_length = length(&mut payload)?;
        let key = take(&mut payload, key_length)?.to_vec();
        let value = match take(&mut payload, 1)? {
            [0] => None,
            [1] => {
                let value_length = length(&mut payload)?;
                Some(take(&mut payload, value_length)?.to_vec())
            }
            _ => return None,
        };
        writes.push((key, value));
    }
    Some(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u8) -> Vec<Write> {
        vec![
            (vec![b'a', n], Some(vec![n; usize::from(n) + 1])),
            (vec![b'i', n, 0, 7], None),
            (vec![b'm'], Some(Vec::new())),
        ]
    }

    #[test]
    fn records_read_back_exactly_and_a_torn_tail_keeps_every_whole_record() {
        let all: Vec<Vec<Write>> = (0..5).map(sample).collect();
        let mut file = Vec::new();
        let mut ends = Vec::new();
        for writes in &all {
            encode_into(&mut file, 7, &writes[..1], &writes[1..]).expect("encode");
            ends.push(file.len());
        }
        assert_eq!(records(&file, Some(7)), (all.clone(), false));
        // Another generation's records, or ones from before the header, end
        // the file at once.
        assert_eq!(records(&file, Some(6)), (Vec::new(), true));
        assert_eq!(records(&file, None), (Vec::new(), true));
        // Cut anywhere: exactly the records wholly before the cut survive.
        for cut in 0..file.len() {
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            let (found, torn) = records(&file[..cut], Some(7));
            assert_eq!(found, all[..whole].to_vec(), "cut at {cut}");
            assert_eq!(torn, !ends.contains(&cut) && cut > 0, "cut at {cut}");
        }
        // A flipped bit anywhere: the records before it survive, none after.
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x10;
            let (found, torn) = records(&bad, Some(7));
            let before = ends.iter().filter(|&&end| end <= at).count();
            assert!(torn, "a flipped bit at {at} went unnoticed");
            assert_eq!(found, all[..before].to_vec(), "flip at {at}");
        }
    }

    #[test]
    fn recovery_applies_every_file_in_order_then_deletes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("sled");
        let (mut log, found) = Log::recover(dir.path(), &db).expect("recover");
        assert_eq!(found, Recovered::default());
        log.append(&[(b"k".to_vec(), Some(b"1".to_vec()))])
            .expect("append");
        log.append(&[(b"gone".to_vec(), Some(b"x".to_vec()))])
            .expect("append");
        log.rotate();
        log.append(&[
            (b"k".to_vec(), Some(b"2".to_vec())),
            (b"gone".to_vec(), None),
        ])
        .expect("append");
        assert!(!log.is_empty());
        // A crash: the writes never reached sled. A torn record ends the newest file.
        drop(log);
        let newest = generations(dir.path()).expect("list");
        assert_eq!(newest, vec![1, 2]);
        let mut file = OpenOptions::new()
            .append(true)
            .open(file_path(dir.path(), 2))
            .expect("open");
        std::io::Write::write_all(&mut file, &[9, 0, 0, 0, 1, 2]).expect("torn bytes");
        let (log, found) = Log::recover(dir.path(), &db).expect("recover");
        assert_eq!(
            found,
            Recovered {
                files: 2,
                records: 3,
                torn: 1
            }
        );
        assert_eq!(db.get(b"k").expect("get").as_deref(), Some(&b"2"[..]));
        assert_eq!(db.get(b"gone").expect("get"), None);
        assert!(log.is_empty());
        assert!(generations(dir.path()).expect("list").is_empty());
        assert_eq!(log.next_generation, 3, "generations never repeat");
    }

    fn open_db(dir: &Path) -> sled::Db {
        sled::Config::new()
            .path(dir.join("db"))
            .open()
            .expect("sled")
    }

    fn put(key: &[u8], value: &[u8]) -> Write {
        (key.to_vec(), Some(value.to_vec()))
    }

    /// [`Log::forget`], and the spare lengthened, as a checkpoint does.
    fn forget(log: &mut Log, sealed: &[u64]) {
        if let Some(headroom) = log.forget(sealed).expect("forget") {
            headroom.make().expect("lengthen the spare");
        }
    }

    #[test]
    fn a_spare_has_room_for_twice_what_its_file_held_so_growing_load_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(dir.path());
        let (mut log, _) = Log::recover(dir.path(), &db).expect("recover");
        for i in 0..10u8 {
            log.append(&[put(b"k", &[i; 100])]).expect("append");
        }
        let end = log.current.as_ref().expect("a file").offset;
        let sealed = log.rotate();
        let headroom = log.forget(&sealed).expect("forget").expect("too short");
        // Until lengthened it is not the spare: the next file starts empty.
        assert!(dir.path().join(GROWING).exists());
        assert!(!dir.path().join(SPARE).exists());
        headroom.make().expect("lengthen");
        let spare = std::fs::metadata(dir.path().join(SPARE)).expect("spare");
        assert_eq!(spare.len(), 2 * end);
        assert!(!dir.path().join(GROWING).exists());
        // The next file is the spare: twice the load fits without growing it.
        for i in 0..20u8 {
            log.append(&[put(b"k", &[i + 100; 100])]).expect("append");
        }
        let reused = std::fs::metadata(file_path(dir.path(), 2)).expect("meta");
        assert_eq!(reused.len(), 2 * end, "overwritten, not appended to");
        // Load doubled, so that spare is lengthened again; at the same load
        // the one after is long enough already.
        let sealed = log.rotate();
        forget(&mut log, &sealed);
        for i in 0..20u8 {
            log.append(&[put(b"k", &[i; 100])]).expect("append");
        }
        let sealed = log.rotate();
        assert!(log.forget(&sealed).expect("forget").is_none());
        // The zeros end a file as a torn record does: recovery replays the
        // records before them, and a file caught while growing is deleted.
        log.append(&[put(b"last", b"1")]).expect("append");
        drop(log);
        std::fs::write(dir.path().join(GROWING), b"half lengthened").expect("write");
        let (_, found) = Log::recover(dir.path(), &db).expect("recover");
        assert_eq!((found.files, found.records), (1, 1));
        assert_eq!(db.get(b"last").expect("get").as_deref(), Some(&b"1"[..]));
        assert!(!dir.path().join(GROWING).exists());
        assert!(!dir.path().join(SPARE).exists());
    }

    #[test]
    fn a_spare_is_lengthened_within_its_cap() {
        assert_eq!(spare_length(0), 0);
        assert_eq!(spare_length(3_000), 6_000);
        assert_eq!(spare_length(MAX_HEADROOM_BYTES), MAX_HEADROOM_BYTES);
        assert_eq!(spare_length(u64::MAX), MAX_HEADROOM_BYTES);
    }

    #[test]
    fn a_reused_file_replays_only_its_own_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(dir.path());
        let (mut log, _) = Log::recover(dir.path(), &db).expect("recover");
        for i in 0..20u8 {
            log.append(&[put(b"old", &[i; 100])]).expect("append");
        }
        let sealed = log.rotate();
        assert_eq!(sealed, vec![1]);
        forget(&mut log, &sealed);
        assert!(dir.path().join(SPARE).exists(), "kept for reuse");
        assert!(generations(dir.path()).expect("list").is_empty());
        // The next file is the spare, written from its start: shorter than
        // what it held, so the old records follow the new one.
        log.append(&[put(b"new", b"1")]).expect("append");
        assert!(!dir.path().join(SPARE).exists());
        let reused = std::fs::metadata(file_path(dir.path(), 2)).expect("meta");
        assert!(reused.len() > 20 * 100, "the old bytes are still there");
        drop(log);
        let (_, found) = Log::recover(dir.path(), &db).expect("recover");
        assert_eq!(
            found.records, 1,
            "the old generation's records end the file"
        );
        assert_eq!(db.get(b"new").expect("get").as_deref(), Some(&b"1"[..]));
        assert_eq!(db.get(b"old").expect("get"), None, "never replayed");
    }

    #[test]
    fn a_spare_renamed_before_its_first_record_holds_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(dir.path());
        let (mut log, _) = Log::recover(dir.path(), &db).expect("recover");
        log.append(&[put(b"old", b"1")]).expect("append");
        let sealed = log.rotate();
        forget(&mut log, &sealed);
        drop(log);
        // A crash between the rename and the first write.
        std::fs::rename(dir.path().join(SPARE), file_path(dir.path(), 2)).expect("rename");
        let (log, found) = Log::recover(dir.path(), &db).expect("recover");
        assert_eq!((found.files, found.records), (1, 0));
        assert_eq!(db.get(b"old").expect("get"), None);
        assert!(log.is_empty());
        // A spare left by a crash is deleted too, not reused after a restart.
        std::fs::write(dir.path().join(SPARE), b"stale").expect("write");
        Log::recover(dir.path(), &db).expect("recover");
        assert!(!dir.path().join(SPARE).exists());
    }

    #[test]
    fn a_file_from_before_the_header_still_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(dir.path());
        let mut bytes = Vec::new();
        for (k, v) in [(b"a", b"1"), (b"b", b"2")] {
            let start = bytes.len();
            encode_into(&mut bytes, 0, &[], &[put(k, v)]).expect("encode");
            // The old CRC: over the payload alone.
            let old = crc(None, &bytes[start + HEADER_BYTES..]);
            bytes[start + 4..start + HEADER_BYTES].copy_from_slice(&old.to_le_bytes());
        }
        std::fs::write(file_path(dir.path(), 3), &bytes).expect("write");
        let (log, found) = Log::recover(dir.path(), &db).expect("recover");
        assert_eq!(
            found,
            Recovered {
                files: 1,
                records: 2,
                torn: 0
            }
        );
        assert_eq!(db.get(b"b").expect("get").as_deref(), Some(&b"2"[..]));
        assert_eq!(log.next_generation, 4);
        assert!(
            !dir.path().join(SPARE).exists(),
            "an old file is not reused"
        );
    }
}
