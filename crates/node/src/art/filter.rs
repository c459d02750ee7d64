//! The caption content filter: a blocklist every caption passes, whichever
//! backend wrote it, and every word of a query before it reaches a caption.
//!
//! A blocklist is the floor, not a content policy: it stops the obvious words
//! (and their l33t spellings), not meaning. Operators extend it with
//! `--caption-blocklist-file`, one word per line.

use std::collections::BTreeSet;

/// Words no caption may hold; a word *starting* with one of these is blocked
/// too ("nazis", "bombing").
const BUILTIN: &[&str] = &[
    "nazi",
    "hitler",
    "genocide",
    "holocaust",
    "rape",
    "rapist",
    "pedo",
    "paedo",
    "suicide",
    "kys",
    "terroris",
    "behead",
    "lynch",
    "murder",
    "massacre",
    "bomb",
    "shooting",
    "porn",
    "nsfw",
    "nude",
    "naked",
    "sex",
    "cocaine",
    "heroin",
    "fuck",
    "shit",
    "cunt",
    "bitch",
    "whore",
    "slut",
    "retard",
];

/// The blocklist.
#[derive(Clone, Debug)]
pub struct CaptionFilter {
    roots: BTreeSet<String>,
}

impl Default for CaptionFilter {
    fn default() -> Self {
        Self::builtin()
    }
}

impl CaptionFilter {
    /// The built-in list.
    pub fn builtin() -> Self {
        Self {
            roots: BUILTIN.iter().map(|w| (*w).to_owned()).collect(),
        }
    }

    /// The built-in list plus `extra` words (blank lines and `#` comments
    /// skipped).
    pub fn with_extra(extra: &str) -> Self {
        let mut filter = Self::builtin();
        for line in extra.lines() {
            let word = normalize(line.trim());
            if !word.is_empty() && !line.trim_start().starts_with('#') {
                filter.roots.insert(word);
            }
        }
        filter
    }

    /// How many roots the list holds.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether the list is empty (never: the built-in list is not).
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Whether `word` (one word) is blocked.
    pub fn blocks_word(&self, word: &str) -> bool {
        let word = normalize(word);
        !word.is_empty()
            && self
                .roots
                .iter()
                .any(|root| word.starts_with(root.as_str()))
    }

    /// Whether `text` may be shown: no word of it is blocked, nor the text
    /// with its separators removed ("b o m b", "b.o.m.b").
    pub fn allows(&self, text: &str) -> bool {
        if text
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| self.blocks_word(w))
        {
            return false;
        }
        let squashed = normalize(text);
        !self
            .roots
            .iter()
            .filter(|root| root.len() >= 4)
            .any(|root| squashed.contains(root.as_str()) && spaced_out(text))
    }
}

/// Lower case, l33t digits and signs read as letters, everything else dropped.
fn normalize(word: &str) -> String {
    word.chars()
        .filter_map(|c| {
            let c = c.to_ascii_lowercase();
            Some(match c {
                '0' => 'o',
                '1' | '!' => 'i',
                '3' => 'e',
                '4' | '@' => 'a',
                '5' | '$' => 's',
                '7' => 't',
                c if c.is_alphanumeric() => c,
                _ => return None,
            })
        })
        .collect()
}

/// Whether the text spells words out one character at a time ("b o m b"):
/// only then is the squashed text searched, so that "bread and bombay mix"
/// style accidents across word boundaries do not trip the filter.
fn spaced_out(text: &str) -> bool {
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let single = words.iter().filter(|w| w.chars().count() == 1).count();
    single >= 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_words_are_caught_in_any_spelling_and_clean_text_passes() {
        let filter = CaptionFilter::builtin();
        assert!(!filter.allows("Nazis are cool"));
        assert!(!filter.allows("b0mb the exam"));
        assert!(!filter.allows("B.O.M.B the exam"));
        assert!(filter.allows("Monday mornings, again"));
        assert!(filter.allows("I ate a bun and some ham"));
    }

    #[test]
    fn operators_extend_the_list() {
        let filter = CaptionFilter::with_extra("# ours\ncrypto\n\n");
        assert!(!filter.allows("to the moon with crypto"));
        assert!(CaptionFilter::builtin().allows("to the moon with crypto"));
        assert_eq!(filter.len(), CaptionFilter::builtin().len() + 1);
    }
}
