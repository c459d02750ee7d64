//! The sled key space: the first byte of every key says what it holds.
//!
//! Each constant is one kind of key, with the rest of the key after it, and
//! each kind's key is built (and, where it is read back, split) here alone;
//! the values are described where they are written ([`crate::shell::store`],
//! [`crate::shell::statements`], [`crate::shell::jobs`],
//! [`crate::shell::notify`]). Integers in keys are big-endian, so keys sort
//! by them. A prefix is never given to another kind: a node reads what an
//! older version wrote by its prefix.

use ledger_crdt::RegionId;

// The ledger's keys: only `Store::load` reads them, at startup.

/// `a` + user → the user's [`ledger_crdt::Account`] with our own entry of
/// the user and the versions held of other origins' entries
/// ([`crate::AccountWrite`]); from older versions, the account with our
/// entry, or the account alone.
pub(crate) const ACCOUNT: u8 = b'a';
/// `q` + origin region (2 bytes) + user → the version held of origin's
/// entry: written by older versions only, and moved into the account at
/// startup.
pub(crate) const VERSION_HELD: u8 = b'q';
/// `o` + user → our own entry as of its last durable write, with its
/// sequence: written by older versions only, and moved into the account at
/// startup.
pub(crate) const OWN_ENTRY: u8 = b'o';
/// `i` + scope + `0x00` + idempotency key → an idempotency record.
pub(crate) const RECORD: u8 = b'i';
/// `h` + user + `0x00` + job → a hold ([`crate::HoldState`]).
pub(crate) const HOLD: u8 = b'h';
/// `m`, alone → the [`crate::Meta`] scalars.
pub(crate) const META: u8 = b'm';

/// The ledger's prefixes: a group commit logs these keys and leaves them to
/// the next checkpoint, which writes each once however often it changed.
pub(crate) const READ_ONLY_AT_START: [u8; 6] =
    [ACCOUNT, VERSION_HELD, OWN_ENTRY, RECORD, HOLD, META];

// Keys read while the node runs.

/// `l` + user + `0x00` + first line id (8 bytes) → a chunk of statement lines.
pub(crate) const STATEMENT_CHUNK: u8 = b'l';
/// `L` + time (8 bytes, ms) + first line id (8 bytes) → a note naming the
/// chunks a commit wrote, so that expiry reads only what expired.
pub(crate) const STATEMENT_NOTE: u8 = b'L';
/// `b` + user → the totals carried forward past expired lines.
pub(crate) const STATEMENT_CARRIED: u8 = b'b';
/// `j` + user + `0x00` + job → an AI job's record.
pub(crate) const JOB: u8 = b'j';
/// `s` + image id → an AI image's [`crate::ImageSpec`].
pub(crate) const IMAGE_SPEC: u8 = b's';
/// `g` + image id → an AI image's PNG, as an AI server drew it.
pub(crate) const IMAGE_PNG: u8 = b'g';
/// `J` + time (8 bytes, ms) + a [`JOB`] key → nothing: when the job was made.
pub(crate) const JOB_MADE: u8 = b'J';
/// `G` + time (8 bytes, ms) + an [`IMAGE_PNG`] key → nothing: when it was made.
pub(crate) const PNG_MADE: u8 = b'G';
/// `n` + time (8 bytes, ms) + region (2 bytes) + user + `0x00` + `d` (low)
/// or `u` (recovered) → a low-balance event waiting to be delivered.
pub(crate) const OUTBOX: u8 = b'n';

/// The bounds of every key of one kind: from `prefix` (inclusive) to the
/// next byte (exclusive).
pub(crate) fn all_of(prefix: u8) -> ([u8; 1], [u8; 1]) {
    ([prefix], [prefix + 1])
}

/// `prefix` + `rest`.
fn under(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

/// `prefix` + `first` + `0x00` + `second` (`first` never holds a NUL: user
/// ids and scopes are visible characters).
fn pair(prefix: u8, first: &str, second: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + first.len() + second.len());
    k.push(prefix);
    k.extend_from_slice(first.as_bytes());
    k.push(0);
    k.extend_from_slice(second.as_bytes());
    k
}

/// The two parts of a [`pair`] key after its prefix.
pub(crate) fn split_pair(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = key.get(1..)?;
    let zero = rest.iter().position(|&b| b == 0)?;
    Some((&rest[..zero], &rest[zero + 1..]))
}

/// A key's bytes after its prefix.
pub(crate) fn after_prefix(key: &[u8]) -> &[u8] {
    key.get(1..).unwrap_or_default()
}

/// The [`ACCOUNT`] key of `user`.
pub(crate) fn account(user: &str) -> Vec<u8> {
    under(ACCOUNT, user.as_bytes())
}

/// The [`VERSION_HELD`] key of `origin`'s entry for `user`: only older
/// versions wrote them (and tests, to check that they are still read).
#[cfg(test)]
pub(crate) fn version_held(origin: RegionId, user: &str) -> Vec<u8> {
    let mut k = under(VERSION_HELD, &origin.0.to_be_bytes());
    k.extend_from_slice(user.as_bytes());
    k
}

/// The origin and user of a [`VERSION_HELD`] key.
pub(crate) fn split_version_held(key: &[u8]) -> Option<(RegionId, &[u8])> {
    let (origin, user) = after_prefix(key).split_at_checked(2)?;
    Some((RegionId(u16::from_be_bytes([origin[0], origin[1]])), user))
}

/// The [`OWN_ENTRY`] key of `user`: only older versions wrote them (and
/// tests, to check that they are still read).
#[cfg(test)]
pub(crate) fn own_entry(user: &str) -> Vec<u8> {
    under(OWN_ENTRY, user.as_bytes())
}

/// The [`RECORD`] key of an idempotency record.
pub(crate) fn record(scope: &str, idempotency_key: &str) -> Vec<u8> {
    pair(RECORD, scope, idempotency_key)
}

/// The [`HOLD`] key of `user`'s hold for `job`.
pub(crate) fn hold(user: &str, job: &str) -> Vec<u8> {
    pair(HOLD, user, job)
}

/// The [`STATEMENT_CHUNK`] key of `user`'s chunk whose first line is `id`.
pub(crate) fn statement_chunk(user: &str, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + 10);
    k.push(STATEMENT_CHUNK);
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// A [`STATEMENT_CHUNK`] key's user part (`l`, the user, `0x00`) and its
/// first line's id.
pub(crate) fn split_statement_chunk(key: &[u8]) -> Option<(&[u8], u64)> {
    let (user, id) = key.split_at_checked(key.len().checked_sub(8)?)?;
    Some((user, u64::from_be_bytes(id.try_into().ok()?)))
}

/// The user a [`STATEMENT_CHUNK`] key names, if it is shaped like one.
pub(crate) fn statement_chunk_user(key: &[u8]) -> Option<&str> {
    let (prefix, _) = split_statement_chunk(key)?;
    let user = prefix
        .strip_prefix(&[STATEMENT_CHUNK])?
        .strip_suffix(&[0])?;
    std::str::from_utf8(user).ok()
}

/// The [`STATEMENT_CARRIED`] key of `user`.
pub(crate) fn statement_carried(user: &str) -> Vec<u8> {
    under(STATEMENT_CARRIED, user.as_bytes())
}

/// The [`JOB`] key of `user`'s AI job `job`.
pub(crate) fn job(user: &str, job: &str) -> Vec<u8> {
    pair(JOB, user, job)
}

/// The user and job of a [`JOB`] key.
pub(crate) fn split_job(key: &[u8]) -> Option<(String, String)> {
    let (user, job) = split_pair(key)?;
    Some((
        String::from_utf8(user.to_vec()).ok()?,
        String::from_utf8(job.to_vec()).ok()?,
    ))
}

/// The key under `prefix` ([`JOB_MADE`], [`PNG_MADE`], [`STATEMENT_NOTE`])
/// that says `entry` was made at `at_ms`.
pub(crate) fn made(prefix: u8, at_ms: u64, entry: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + entry.len());
    k.push(prefix);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(entry);
    k
}

/// The entry a [`made`] key names.
pub(crate) fn made_entry(key: &[u8]) -> Option<&[u8]> {
    key.get(9..)
}

/// The [`IMAGE_SPEC`] key of AI image `id`.
pub(crate) fn image_spec(id: &str) -> Vec<u8> {
    under(IMAGE_SPEC, id.as_bytes())
}

/// The [`IMAGE_PNG`] key of AI image `id`.
pub(crate) fn image_png(id: &str) -> Vec<u8> {
    under(IMAGE_PNG, id.as_bytes())
}

/// The [`OUTBOX`] key of a low-balance event: `tag` is `d` (low) or `u`
/// (recovered).
pub(crate) fn outbox(at_ms: u64, region: RegionId, user: &str, tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(13 + user.len());
    k.push(OUTBOX);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(&region.0.to_be_bytes());
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k.push(tag);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_prefix() {
        let all = [
            ACCOUNT,
            VERSION_HELD,
            OWN_ENTRY,
            RECORD,
            HOLD,
            META,
            STATEMENT_CHUNK,
            STATEMENT_NOTE,
            STATEMENT_CARRIED,
            JOB,
            IMAGE_SPEC,
            IMAGE_PNG,
            JOB_MADE,
            PNG_MADE,
            OUTBOX,
        ];
        let distinct: std::collections::BTreeSet<u8> = all.into_iter().collect();
        assert_eq!(distinct.len(), all.len());
        // `all_of` needs a next byte.
        assert!(all.iter().all(|&p| p < u8::MAX));
    }

    #[test]
    fn keys_split_back_into_what_built_them() {
        let held = version_held(RegionId(0x0102), "ann");
        assert_eq!(held, b"q\x01\x02ann");
        assert_eq!(
            split_version_held(&held),
            Some((RegionId(0x0102), &b"ann"[..]))
        );
        assert_eq!(split_version_held(b"q\x01"), None);
        assert_eq!(
            split_pair(&record("scope", "k\0ey")),
            Some((&b"scope"[..], &b"k\0ey"[..]))
        );
        assert_eq!(
            split_pair(&hold("ann", "job-1")),
            Some((&b"ann"[..], &b"job-1"[..]))
        );
        assert_eq!(split_pair(b"h"), None);
        assert_eq!(
            split_job(&job("ann", "j")),
            Some(("ann".into(), "j".into()))
        );
        assert_eq!(after_prefix(&account("ann")), b"ann");
        assert_eq!(after_prefix(&own_entry("ann")), b"ann");
        assert_eq!(after_prefix(b""), b"");
        let chunk = statement_chunk("ann", 7);
        assert_eq!(split_statement_chunk(&chunk), Some((&b"lann\0"[..], 7)));
        assert_eq!(split_statement_chunk(b"short"), None);
        assert_eq!(statement_chunk_user(&chunk), Some("ann"));
        assert_eq!(
            statement_chunk_user(&under(RECORD, b"ann\0\0\0\0\0\0\0\x07")),
            None
        );
        // Sorting by key sorts by time, then by what follows.
        assert!(made(JOB_MADE, 255, b"z") < made(JOB_MADE, 256, b"a"));
        assert_eq!(
            made_entry(&made(PNG_MADE, 1, &image_png("x"))),
            Some(&b"gx"[..])
        );
        assert_eq!(made_entry(b"G1234567"), None);
        assert!(outbox(1, RegionId(9), "zed", b'd') < outbox(2, RegionId(1), "ann", b'd'));
        assert_eq!(image_spec("x")[0], IMAGE_SPEC);
        assert_eq!(image_png("x")[0], IMAGE_PNG);
        assert_eq!(statement_carried("x")[0], STATEMENT_CARRIED);
    }
}
