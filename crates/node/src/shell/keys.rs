//! The sled key space: the first byte of every key says what it holds.
//!
//! Each constant is one kind of key, with the rest of the key after it; the
//! values are described where they are written ([`crate::shell::store`],
//! [`crate::shell::statements`], [`crate::shell::jobs`],
//! [`crate::shell::notify`]). Integers in keys are big-endian, so keys sort
//! by them. A prefix is never given to another kind: a node reads what an
//! older version wrote by its prefix.

// The ledger's keys: only `Store::load` reads them, at startup.

/// `a` + user → the user's [`ledger_crdt::Account`].
pub(crate) const ACCOUNT: u8 = b'a';
/// `q` + origin region (2 bytes) + user → the version held of origin's entry.
pub(crate) const VERSION_HELD: u8 = b'q';
/// `o` + user → our own entry as of its last durable write, with its sequence.
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
}
