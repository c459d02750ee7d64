//! What regions say to each other.
//!
//! Every message is encoded with the ledger's versioned, size-limited bincode
//! format, so bytes from a peer are decoded with a limit and never panic.

use crate::region::idempotency::{IdempotencyRecord, RecordId};
use crate::region::units::Seq;
use bincode::{Decode, Encode};
use ledger_crdt::{Account, RegionId, wire};

/// The largest peer message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// One region's entry for one user, at one of that region's write sequence numbers.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Item {
    /// The region that wrote the entry.
    pub origin: RegionId,
    /// The origin's write sequence number of this version.
    pub seq: Seq,
    /// The user.
    pub user: String,
    /// The origin's whole entry for the user, as a delta.
    pub delta: Account,
}

impl Item {
    /// About how many bytes the item takes in a message: what batches and
    /// catch-ups budget by (entries are small and alike; the user id varies).
    pub fn wire_cost(&self) -> usize {
        self.user.len() + 64
    }
}

/// An idempotency record as it travels: where it lives, and the record.
pub(crate) type RecordItem = (RecordId, IdempotencyRecord);

/// How far a catch-up brings one origin: together with every write of
/// `origin` up to `after`, which the asker said it held when it asked, the
/// asker now holds every write up to `upto`. Applied only if the asker still
/// holds up to `after`: a region that crashed after asking may have lost
/// what it held then, and the answer says nothing about that part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Covered {
    /// The origin region.
    pub origin: RegionId,
    /// What the asker held of it when it asked.
    pub after: Seq,
    /// What it holds now, with this catch-up.
    pub upto: Seq,
}

/// What a region knows of an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum KeyState {
    /// Nothing: no request with this key was executed here.
    Unknown,
    /// A request with this key was executed here and is not yet durable.
    InFlight,
    /// A request with this key was executed and made durable here.
    Held(IdempotencyRecord),
}

/// A message between regions.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Message {
    /// The sender's own writes with sequence numbers in `(from_seq, to_seq]`: every
    /// user written in that range, at its latest durable version.
    Deltas {
        /// Range start (exclusive).
        from_seq: Seq,
        /// Range end (inclusive).
        to_seq: Seq,
        /// The entries.
        items: Vec<Item>,
        /// Idempotency records of writes in the range:
        /// a retry that fails over to another region after this arrived is
        /// answered from the record instead of charged again.
        records: Vec<RecordItem>,
    },
    /// Anti-entropy: "of each origin, I hold every write up to this sequence".
    Digest {
        /// Per-origin watermarks.
        watermarks: Vec<(RegionId, Seq)>,
    },
    /// The answer to a digest: entries the asker lacks, of any origin (this is how
    /// updates flow A→B→C while A–C is cut), and how far each origin is covered.
    CatchUp {
        /// The entries.
        items: Vec<Item>,
        /// Per origin, the range of writes the asker now holds.
        covered: Vec<Covered>,
        /// Idempotency records of the writes covered:
        /// keys used while the asker was away are replayed there too.
        records: Vec<RecordItem>,
    },
    /// "Do you know this idempotency key?": asked before a keyed request runs
    /// at a region that may not have the record yet (a retry that failed over).
    RecordQuery {
        /// The key.
        id: RecordId,
    },
    /// The answer to a [`Message::RecordQuery`].
    RecordAnswer {
        /// The key.
        id: RecordId,
        /// What the answering region knows of it.
        known: KeyState,
    },
    /// "A spend was refused here for lack of rights: please send some."
    RightsRequest {
        /// The user.
        user: String,
        /// Tokens wanted.
        amount: u64,
    },
}

impl Message {
    /// The message's kind, as metrics label the bytes sent of each.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Deltas { .. } => "deltas",
            Message::Digest { .. } => "digest",
            Message::CatchUp { .. } => "catch_up",
            Message::RecordQuery { .. } => "record_query",
            Message::RecordAnswer { .. } => "record_answer",
            Message::RightsRequest { .. } => "rights_request",
        }
    }

    /// Encodes the message.
    pub fn encode(&self) -> Result<Vec<u8>, ledger_crdt::Error> {
        wire::encode(self)
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Message, ledger_crdt::Error> {
        wire::decode::<Message, MAX_MESSAGE_BYTES>(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        let mut account = Account::new();
        let genesis = ledger_crdt::Genesis::new(10, [RegionId(1)]).expect("genesis");
        let delta = account
            .apply(
                &genesis,
                RegionId(1),
                ledger_crdt::Op::Spend {
                    amount: 3,
                    call: true,
                },
            )
            .expect("spend");
        Message::CatchUp {
            items: vec![Item {
                origin: RegionId(1),
                seq: Seq(7),
                user: "alice".into(),
                delta,
            }],
            covered: vec![Covered {
                origin: RegionId(1),
                after: Seq(0),
                upto: Seq(7),
            }],
            records: Vec::new(),
        }
    }

    #[test]
    fn round_trips() {
        let message = sample();
        let bytes = message.encode().expect("encodes");
        assert_eq!(Message::decode(&bytes), Ok(message));
    }

    #[test]
    fn truncated_and_random_bytes_are_errors_not_panics() {
        let bytes = sample().encode().expect("encodes");
        for cut in 0..bytes.len() {
            assert!(
                Message::decode(&bytes[..cut]).is_err(),
                "prefix {cut} decoded"
            );
        }
        // A fixed-seed xorshift stream of garbage, some of it behind a valid version byte.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..2_000usize {
            let mut garbage = Vec::with_capacity(len % 300);
            for _ in 0..len % 300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                garbage.push(x as u8);
            }
            if len % 2 == 0 && !garbage.is_empty() {
                garbage[0] = ledger_crdt::wire::WIRE_VERSION;
            }
            let _ = Message::decode(&garbage);
        }
    }
}
