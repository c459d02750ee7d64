//! The built-in meme catalog and the deterministic choice of a meme.
//!
//! The catalog ships inside the binary: every meme format crossed with every topic,
//! some localised. A request always gets a meme, and the same query, position and
//! seed always get the same one, so a retried request shows the same meme.
//! Each meme's picture is drawn from its captions (see `art/`, served by
//! `GET /v1/images/…`).

use serde::Serialize;

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
        Self { memes, seed }
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
        let words: Vec<String> = query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut candidates: Vec<&Meme> = self
            .memes
            .iter()
            .filter(|m| words.iter().any(|w| matches(m, w)))
            .collect();
        if candidates.is_empty() {
            candidates = self.memes.iter().collect();
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
        let mut hash = Fnv::new(self.seed);
        hash.write(words.join(" ").as_bytes());
        if let Some(p) = position {
            hash.write(&p.lat.to_bits().to_le_bytes());
            hash.write(&p.lon.to_bits().to_le_bytes());
        }
        // `candidates` is never empty: the catalog is not.
        candidates[(hash.0 % candidates.len() as u64) as usize]
    }
}

fn matches(meme: &Meme, word: &str) -> bool {
    meme.tags.iter().any(|t| t.eq_ignore_ascii_case(word)) || meme.title_lower.contains(word)
}

/// The locale (e.g. `en-AU`) whose representative position is nearest `p`, on
/// the sphere.
pub fn nearest_locale(p: Position) -> &'static str {
    let distance = |lat: f64, lon: f64| {
        let (φ1, φ2) = (p.lat.to_radians(), lat.to_radians());
        let dλ = (lon - p.lon).to_radians();
        // Spherical law of cosines: enough to rank a handful of cities.
        (φ1.sin() * φ2.sin() + φ1.cos() * φ2.cos() * dλ.cos())
            .clamp(-1.0, 1.0)
            .acos()
    };
    LOCALES
        .iter()
        .min_by(|a, b| distance(a.1, a.2).total_cmp(&distance(b.1, b.2)))
        .map_or("en-US", |l| l.0)
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
}
