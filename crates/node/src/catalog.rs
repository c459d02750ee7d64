//! The built-in meme catalog and the deterministic choice of a meme.
//!
//! The catalog ships inside the binary: every meme format crossed with every topic,
//! some localised. A request always gets a meme, and the same query, position and
//! seed always get the same one, so a retried request shows the same meme.
//! Choosing is on every paid call, so the memes a query word matches are
//! worked out once per word and kept as a bit set ([`MemeSet`]).
//! Each meme's picture is drawn from its captions (see `art/`, served by
//! `GET /v1/images/…`).

use crate::hashing::Map;
use serde::Serialize;
use std::borrow::Cow;
use std::sync::{LazyLock, PoisonError, RwLock};

/// The most query words whose matches are kept. Words come from clients, so
/// the memo is bounded: past this it starts afresh (a miss only costs a scan).
const MAX_REMEMBERED_WORDS: usize = 4096;

/// One meme of the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Meme {
    /// Stable id within the catalog.
    pub id: u32,
    /// Human title.
    pub title: String,
    /// Who made it.
    pub source: String,
    /// Words a query can match besides the title.
    #[serde(skip)]
    pub tags: Vec<&'static str>,
    /// The locale the meme speaks to, if any.
    #[serde(skip)]
    pub locale: Option<&'static str>,
    /// The title in lower case, computed once for matching.
    #[serde(skip)]
    title_lower: String,
}

pub(crate) const FORMATS: [&str; 30] = [
    "Distracted Boyfriend",
    "Drake Hotline Bling",
    "Two Buttons",
    "Change My Mind",
    "Expanding Brain",
    "This Is Fine",
    "Is This a Pigeon",
    "Woman Yelling at Cat",
    "Surprised Pikachu",
    "Galaxy Brain",
    "Gru's Plan",
    "Left Exit 12",
    "Mocking SpongeBob",
    "Hide the Pain Harold",
    "Roll Safe",
    "Success Kid",
    "Disaster Girl",
    "One Does Not Simply",
    "Ancient Aliens",
    "Bernie Mittens",
    "Panik Kalm Panik",
    "Trade Offer",
    "Stonks",
    "Always Has Been",
    "Buff Doge vs Cheems",
    "Uno Draw 25",
    "Anakin Padme",
    "Sad Pablo",
    "Running Away Balloon",
    "Monkey Puppet",
];

pub(crate) const TOPICS: [(&str, &[&str]); 10] = [
    ("Food", &["food", "pizza", "lunch", "coffee"]),
    ("Monday Mornings", &["work", "monday", "office"]),
    ("Cats", &["cat", "cats", "pets"]),
    ("Dogs", &["dog", "dogs", "pets"]),
    ("Programming", &["code", "programming", "bug", "rust"]),
    ("Weather", &["weather", "rain", "sun"]),
    ("Commuting", &["commute", "traffic", "train"]),
    ("Gym", &["gym", "fitness", "workout"]),
    ("Weekend", &["weekend", "party", "sleep"]),
    ("Exams", &["school", "exam", "study"]),
];

/// Locales memes can speak to, with a representative position (lat, lon).
const LOCALES: [(&str, f64, f64); 8] = [
    ("en-US", 40.73, -73.94),
    ("en-GB", 51.51, -0.13),
    ("en-AU", -33.87, 151.21),
    ("ja-JP", 35.68, 139.69),
    ("pt-BR", -23.55, -46.63),
    ("de-DE", 52.52, 13.40),
    ("fr-FR", 48.86, 2.35),
    ("hi-IN", 19.08, 72.88),
];

/// A position the caller gave: finite, lat within ±90, lon within ±180.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

/// The shipped catalog.
#[derive(Debug)]
pub struct Catalog {
    memes: Vec<Meme>,
    seed: u64,
    /// The memes of each locale.
    by_locale: Map<&'static str, MemeSet>,
    /// The memes each query word (lower case) matches, as met.
    by_word: RwLock<Map<String, MemeSet>>,
}

/// A set of memes, by their index in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MemeSet(Vec<u64>);

impl MemeSet {
    fn empty(memes: usize) -> Self {
        MemeSet(vec![0; memes.div_ceil(64)])
    }

    /// Makes this every one of `memes` memes.
    fn fill(&mut self, memes: usize) {
        (0..memes).for_each(|i| self.insert(i));
    }

    fn of(memes: &[Meme], keep: impl Fn(&Meme) -> bool) -> Self {
        let mut set = Self::empty(memes.len());
        for (i, meme) in memes.iter().enumerate() {
            if keep(meme) {
                set.insert(i);
            }
        }
        set
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn union_with(&mut self, other: &MemeSet) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a |= b);
    }

    fn intersect_with(&mut self, other: &MemeSet) {
        self.0.iter_mut().zip(&other.0).for_each(|(a, b)| *a &= b);
    }

    /// How many memes both sets hold.
    fn intersection_len(&self, other: &MemeSet) -> u64 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }

    fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The index of the `n`th member, counting from 0 in catalog order.
    fn nth(&self, mut n: u64) -> Option<usize> {
        for (w, &word) in self.0.iter().enumerate() {
            let ones = u64::from(word.count_ones());
            if n < ones {
                let mut rest = word;
                for _ in 0..n {
                    rest &= rest - 1;
                }
                return Some(w * 64 + rest.trailing_zeros() as usize);
            }
            n -= ones;
        }
        None
    }
}

impl Catalog {
    /// The built-in catalog: 300 memes. `seed` varies the choice between deployments.
    pub fn builtin(seed: u64) -> Self {
        let mut memes = Vec::with_capacity(FORMATS.len() * TOPICS.len());
        for (f, format) in FORMATS.iter().enumerate() {
            for (t, (topic, tags)) in TOPICS.iter().enumerate() {
                let id = (f * TOPICS.len() + t) as u32 + 1;
                // A third of each topic's memes are localised, covering every locale.
                let locale = ((f + 2 * t) % 3 == 0).then(|| LOCALES[(f + t) % LOCALES.len()].0);
                let mut all_tags = tags.to_vec();
                all_tags.extend(format.split(' ').filter(|w| w.len() > 3));
                let title = format!("{format}: {topic}");
                memes.push(Meme {
                    id,
                    title_lower: title.to_lowercase(),
                    title,
                    source: "maas-builtin".to_owned(),
                    tags: all_tags,
                    locale,
                });
            }
        }
        let by_locale = LOCALES
            .iter()
            .map(|&(locale, _, _)| (locale, MemeSet::of(&memes, |m| m.locale == Some(locale))))
            .collect();
        Self {
            memes,
            seed,
            by_locale,
            by_word: RwLock::new(Map::default()),
        }
    }

    /// Every meme, in id order.
    pub fn memes(&self) -> &[Meme] {
        &self.memes
    }

    /// Number of memes.
    pub fn len(&self) -> usize {
        self.memes.len()
    }

    /// Whether the catalog is empty (never, for the built-in one).
    pub fn is_empty(&self) -> bool {
        self.memes.is_empty()
    }

    /// Picks a meme: those matching `query` (title or tags), preferring the locale
    /// nearest `position`; if nothing matches, the whole catalog. Deterministic.
    pub fn choose(&self, query: &str, position: Option<Position>) -> &Meme {
        let mut hash = Fnv::new(self.seed);
        let mut candidates = MemeSet::empty(self.memes.len());
        let words = query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty());
        for (i, word) in words.enumerate() {
            // Most words come in lower case already: folded only when not.
            let word = if word
                .bytes()
                .any(|b| !b.is_ascii_lowercase() && !b.is_ascii_digit())
            {
                Cow::Owned(word.to_lowercase())
            } else {
                Cow::Borrowed(word)
            };
            // The words, lower case and joined by one space, pick among the
            // candidates.
            if i > 0 {
                hash.write(b" ");
            }
            hash.write(word.as_bytes());
            self.add_matching(&word, &mut candidates);
        }
        if candidates.len() == 0 {
            candidates.fill(self.memes.len());
        }
        if let Some(p) = position {
            if let Some(local) = self.by_locale.get(nearest_locale(p))
                && candidates.intersection_len(local) > 0
            {
                candidates.intersect_with(local);
            }
            hash.write(&p.lat.to_bits().to_le_bytes());
            hash.write(&p.lon.to_bits().to_le_bytes());
        }
        // `candidates` is never empty: the catalog is not.
        let n = hash.0 % candidates.len().max(1);
        &self.memes[candidates.nth(n).unwrap_or(0)]
    }

    /// Adds the memes `word` (lower case) matches to `into`: scanned once and
    /// remembered, then read under the shared lock without a copy.
    fn add_matching(&self, word: &str, into: &mut MemeSet) {
        if let Some(set) = self
            .by_word
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(word)
        {
            into.union_with(set);
            return;
        }
        let set = MemeSet::of(&self.memes, |m| matches(m, word));
        into.union_with(&set);
        let mut known = self.by_word.write().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_REMEMBERED_WORDS {
            known.clear();
        }
        known.insert(word.to_owned(), set);
    }
}

fn matches(meme: &Meme, word: &str) -> bool {
    meme.tags.iter().any(|t| t.eq_ignore_ascii_case(word)) || meme.title_lower.contains(word)
}

/// The locale (e.g. `en-AU`) whose representative position is nearest `p`, on
/// the sphere: the one whose unit vector is most aligned with `p`'s (the
/// cosine of the angle between two points is their vectors' dot product, so
/// no `acos` is needed to rank them). Every curated meme call asks this; the
/// locales' vectors are computed once.
pub fn nearest_locale(p: Position) -> &'static str {
    static LOCALE_VECTORS: LazyLock<[[f64; 3]; LOCALES.len()]> =
        LazyLock::new(|| LOCALES.map(|(_, lat, lon)| unit_vector(lat, lon)));
    let v = unit_vector(p.lat, p.lon);
    let alignment = |u: &[f64; 3]| u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
    let mut nearest = ("en-US", f64::NEG_INFINITY);
    for (locale, u) in LOCALES.iter().zip(LOCALE_VECTORS.iter()) {
        // Strictly greater: of two equally near, the first listed wins.
        let a = alignment(u);
        if a > nearest.1 {
            nearest = (locale.0, a);
        }
    }
    nearest.0
}

/// The point at (`lat`, `lon`) degrees on the unit sphere.
fn unit_vector(lat: f64, lon: f64) -> [f64; 3] {
    let (φ, λ) = (lat.to_radians(), lon.to_radians());
    let (sin_φ, cos_φ) = φ.sin_cos();
    let (sin_λ, cos_λ) = λ.sin_cos();
    [cos_φ * cos_λ, cos_φ * sin_λ, sin_φ]
}

/// FNV-1a: small, and stable across platforms and releases, unlike std's hasher.
struct Fnv(u64);

impl Fnv {
    fn new(seed: u64) -> Self {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.write(&seed.to_le_bytes());
        h
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_matches_tags_and_choice_is_deterministic() {
        let catalog = Catalog::builtin(7);
        assert_eq!(catalog.len(), 300);
        let meme = catalog.choose("pizza", None);
        assert!(meme.title.ends_with(": Food"), "{}", meme.title);
        assert_eq!(catalog.choose("pizza", None), meme);
    }

    /// The great-circle distance, by the spherical law of cosines: what
    /// `nearest_locale` ranked by before it compared unit vectors.
    fn angle(p: Position, lat: f64, lon: f64) -> f64 {
        let (φ1, φ2) = (p.lat.to_radians(), lat.to_radians());
        let dλ = (lon - p.lon).to_radians();
        (φ1.sin() * φ2.sin() + φ1.cos() * φ2.cos() * dλ.cos())
            .clamp(-1.0, 1.0)
            .acos()
    }

    #[test]
    fn the_nearest_locale_is_the_one_at_the_least_great_circle_distance() {
        let mut checked = 0;
        for lat in (-89..=89).step_by(2) {
            for lon in (-179..=179).step_by(3) {
                let p = Position {
                    lat: f64::from(lat) + 0.37,
                    lon: f64::from(lon) - 0.21,
                };
                let mut by_angle: Vec<(f64, &str)> = LOCALES
                    .iter()
                    .map(|&(name, la, lo)| (angle(p, la, lo), name))
                    .collect();
                by_angle.sort_by(|a, b| a.0.total_cmp(&b.0));
                // Two locales about equally near may rank either way by
                // rounding; every other position has one answer.
                if by_angle[1].0 - by_angle[0].0 < 1e-9 {
                    continue;
                }
                assert_eq!(nearest_locale(p), by_angle[0].1, "at {p:?}");
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn position_prefers_the_nearest_locale() {
        let catalog = Catalog::builtin(7);
        let sydney = Position {
            lat: -33.9,
            lon: 151.2,
        };
        assert_eq!(catalog.choose("", Some(sydney)).locale, Some("en-AU"));
        let nyc = Position {
            lat: 40.730610,
            lon: -73.935242,
        };
        assert_eq!(catalog.choose("food", Some(nyc)).locale, Some("en-US"));
    }

    #[test]
    fn unmatched_query_still_answers() {
        let catalog = Catalog::builtin(0);
        assert!(catalog.choose("zzzz-nothing", None).id >= 1);
    }

    /// The choice as it was made before the word memo: a scan of every meme.
    fn choose_by_scan<'c>(
        catalog: &'c Catalog,
        query: &str,
        position: Option<Position>,
    ) -> &'c Meme {
        let words: Vec<String> = query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut candidates: Vec<&Meme> = catalog
            .memes
            .iter()
            .filter(|m| words.iter().any(|w| matches(m, w)))
            .collect();
        if candidates.is_empty() {
            candidates = catalog.memes.iter().collect();
        }
        if let Some(p) = position {
            let near = nearest_locale(p);
            let local: Vec<&Meme> = candidates
                .iter()
                .copied()
                .filter(|m| m.locale == Some(near))
                .collect();
            if !local.is_empty() {
                candidates = local;
            }
        }
        let mut hash = Fnv::new(catalog.seed);
        hash.write(words.join(" ").as_bytes());
        if let Some(p) = position {
            hash.write(&p.lat.to_bits().to_le_bytes());
            hash.write(&p.lon.to_bits().to_le_bytes());
        }
        candidates[(hash.0 % candidates.len() as u64) as usize]
    }

    proptest::proptest! {
        /// The memo changes nothing: every query and position gets the meme a
        /// full scan would give, asked once or many times.
        #[test]
        fn the_word_memo_chooses_as_a_scan_does(
            seed in 0u64..4,
            query in "([a-zA-Z]{0,6}[ ,:'-]?){0,4}|(pizza|cat|gru|s|rust|monkey|food|a){1,3}",
            lat in -90.0f64..90.0,
            lon in -180.0f64..180.0,
            located in proptest::bool::ANY,
        ) {
            let catalog = Catalog::builtin(seed);
            let position = located.then_some(Position { lat, lon });
            let expected = choose_by_scan(&catalog, &query, position).id;
            proptest::prop_assert_eq!(catalog.choose(&query, position).id, expected);
            proptest::prop_assert_eq!(catalog.choose(&query, position).id, expected);
        }
    }

    #[test]
    fn the_word_memo_is_bounded() {
        let catalog = Catalog::builtin(1);
        for i in 0..MAX_REMEMBERED_WORDS + 10 {
            catalog.choose(&format!("w{i}"), None);
        }
        let known = catalog.by_word.read().expect("lock").len();
        assert!(known <= MAX_REMEMBERED_WORDS, "{known} words kept");
    }
}
