//! The JSON body of a curated meme, most of it rendered once at startup.
//!
//! Every curated call answers one of the catalog's memes with the caller's
//! balance. Serializing the meme's fields (escaping its title and URL) on each
//! call was about 5 % of a spend's user-space instructions (callgrind, see
//! benches/README.md). What never changes, everything up to the balance, is
//! rendered here once per catalog meme; an answer appends only its numbers.
//! The bytes are exactly what serializing the whole
//! [`crate::shell::http::MemeResponse`] gives: a test checks it.

use crate::Receipt;
use crate::catalog::{Catalog, Meme};
use crate::shell::http::MemeResponse;

/// A receipt of zeros, to render the heads with.
const NOTHING: Receipt = Receipt {
    balance: 0,
    spendable_here: 0,
    calls: 0,
};

/// Where a rendered answer is cut: its head ends with this comma, and the
/// receipt's numbers follow, in the answer's order.
const BALANCE_FIELD: &[u8] = b",\"balance\":";

/// Each catalog meme's answer up to its balance, by meme id.
pub(crate) struct CuratedBodies {
    heads: Vec<Option<Box<[u8]>>>,
}

impl CuratedBodies {
    /// Renders the head of every meme in `catalog`, with the URL `image`
    /// gives for its id.
    pub(crate) fn new<'a>(catalog: &Catalog, image: impl Fn(u32) -> &'a str) -> Self {
        let mut heads = Vec::new();
        for meme in catalog.memes() {
            let index = meme.id as usize;
            if heads.len() <= index {
                heads.resize(index + 1, None);
            }
            heads[index] = head(&whole(meme, image(meme.id), &NOTHING));
        }
        Self { heads }
    }

    /// The whole JSON answer for `meme`, whose image is at `image`, after a
    /// charge that left `receipt`.
    pub(crate) fn body(&self, meme: &Meme, image: &str, receipt: &Receipt) -> Vec<u8> {
        let Some(Some(head)) = self.heads.get(meme.id as usize) else {
            // A meme not rendered at startup (none, today).
            return whole(meme, image, receipt);
        };
        // The numbers by `itoa`, as serde_json writes them: `write!` went
        // through the formatting machinery, about 500 instructions a spend.
        let mut numbers = itoa::Buffer::new();
        let mut body = Vec::with_capacity(head.len() + 64);
        body.extend_from_slice(head);
        body.extend_from_slice(b"\"balance\":");
        body.extend_from_slice(numbers.format(receipt.balance).as_bytes());
        body.extend_from_slice(b",\"spendable_here\":");
        body.extend_from_slice(numbers.format(receipt.spendable_here).as_bytes());
        body.push(b'}');
        body
    }
}

/// The answer serialized whole, as the API documents it.
fn whole(meme: &Meme, image: &str, receipt: &Receipt) -> Vec<u8> {
    let answer = MemeResponse {
        id: meme.id,
        title: &meme.title,
        image,
        source: &meme.source,
        kind: "curated",
        balance: receipt.balance,
        spendable_here: receipt.spendable_here,
    };
    // Serializing strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&answer).unwrap_or_default()
}

/// `whole` up to and including the comma before the balance. The title and
/// URL are escaped strings, so the field's name appears nowhere else.
fn head(whole: &[u8]) -> Option<Box<[u8]>> {
    let at = whole
        .windows(BALANCE_FIELD.len())
        .rposition(|w| w == BALANCE_FIELD)?;
    Some(whole[..=at].into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_meme_renders_as_if_serialized_whole() {
        let catalog = Catalog::builtin(7);
        let urls: Vec<String> = (0..=catalog.len() as u32)
            .map(|id| format!("/images/m{id}-\"quoted\".png"))
            .collect();
        let url = |id: u32| urls[id as usize].as_str();
        let bodies = CuratedBodies::new(&catalog, url);
        let receipts = [
            NOTHING,
            Receipt {
                balance: 149,
                spendable_here: 50,
                calls: 1,
            },
            Receipt {
                balance: u64::MAX,
                spendable_here: u64::MAX,
                calls: 0,
            },
        ];
        for meme in catalog.memes() {
            for receipt in &receipts {
                let body = bodies.body(meme, url(meme.id), receipt);
                assert_eq!(body, whole(meme, url(meme.id), receipt), "meme {}", meme.id);
                let parsed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                assert_eq!(parsed["balance"], receipt.balance);
            }
        }
    }

    #[test]
    fn a_title_that_names_the_balance_field_stays_inside_its_string() {
        let whole = br#"{"id":1,"title":",\"balance\":","balance":3,"spendable_here":2}"#;
        assert_eq!(
            head(whole).as_deref(),
            Some(&br#"{"id":1,"title":",\"balance\":","#[..])
        );
    }
}
