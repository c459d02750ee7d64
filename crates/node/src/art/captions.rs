//! What the memes say: the catalog's curated captions, and the embedded AI
//! generator's seeded grammar.
//!
//! The embedded generator is a procedural generator, not a neural model: it
//! fills templates with the words of the query and a word of the caller's
//! locale, picks a layout, a palette and shapes from a seed, and so makes a
//! new meme per request (a new seed each time), every one of them a PNG.

use super::canvas::{PALETTE_COUNT, Rng};
use super::filter::CaptionFilter;
use super::spec::{ImageSpec, Layout};
use crate::catalog::{FORMATS, TOPICS};

/// Per topic: top/bottom pairs, a rejected/approved pair, a four-step ladder.
struct TopicLines {
    pairs: [(&'static str, &'static str); 2],
    choice: (&'static str, &'static str),
    ladder: [&'static str; 4],
}

const LINES: [TopicLines; 10] = [
    TopicLines {
        pairs: [
            ("Ordering a salad", "Then eating the whole pizza"),
            ("One coffee a day", "Is what I tell my doctor"),
        ],
        choice: ("Cooking at home", "Cereal for dinner, again"),
        ladder: [
            "Lunch",
            "Second lunch",
            "Lunch at 10 am",
            "Lunch is a state of mind",
        ],
    },
    TopicLines {
        pairs: [
            ("Monday morning", "Already tired of Monday"),
            ("This meeting could have been", "an email"),
        ],
        choice: ("Starting the week fresh", "Five alarms and a prayer"),
        ladder: [
            "Coffee",
            "Two coffees",
            "Coffee IV drip",
            "Becoming the coffee",
        ],
    },
    TopicLines {
        pairs: [
            ("Me: buys the cat a bed", "The cat: sleeps in the box"),
            ("The cat at 3 am", "Decides it is zoomies time"),
        ],
        choice: ("Expensive cat toys", "A crumpled receipt"),
        ladder: [
            "Cat",
            "Cat on keyboard",
            "Cat in the meeting",
            "Cat runs the company",
        ],
    },
    TopicLines {
        pairs: [
            ("Says 'walk' once", "Dog hears it from three rooms away"),
            ("Good boy?", "Best boy"),
        ],
        choice: ("Dog food", "Whatever the human is eating"),
        ladder: ["Sit", "Stay", "Fetch", "Opens the fridge himself"],
    },
    TopicLines {
        pairs: [
            ("It works on my machine", "Then we ship your machine"),
            ("Fixes one bug", "Twelve new bugs appear"),
        ],
        choice: ("Reading the docs", "Guessing until it compiles"),
        ladder: [
            "println! debugging",
            "A debugger",
            "Property tests",
            "A deterministic simulator",
        ],
    },
    TopicLines {
        pairs: [
            ("Forecast: sunny", "Forgot the umbrella, obviously"),
            ("It is raining", "So it is a blanket day"),
        ],
        choice: ("Checking the forecast", "Looking out the window"),
        ladder: ["Drizzle", "Rain", "Storm", "Working from home"],
    },
    TopicLines {
        pairs: [
            ("The train is late", "Surprised? Nobody"),
            ("Leave early to beat traffic", "Everyone had the same idea"),
        ],
        choice: ("Rush hour", "Leaving at 6 am like a legend"),
        ladder: ["Walking", "Bus", "Train", "Commuting to the couch"],
    },
    TopicLines {
        pairs: [
            ("New year, new me", "Gym card used once"),
            ("Skipping leg day", "Again"),
        ],
        choice: ("Cardio", "Lifting the fridge door"),
        ladder: ["Stretching", "Jogging", "Lifting", "Posting about lifting"],
    },
    TopicLines {
        pairs: [
            ("Big weekend plans", "Sleeps until noon"),
            ("Friday: so many plans", "Sunday: did none of them"),
        ],
        choice: ("Going out", "Staying in with snacks"),
        ladder: ["Nap", "Long nap", "Nap that ends at dinner", "Hibernation"],
    },
    TopicLines {
        pairs: [
            ("Studied all week", "Exam asks the one thing I skipped"),
            ("Five minutes of study", "Deserves a two hour break"),
        ],
        choice: ("Studying early", "The all-nighter"),
        ladder: [
            "Reading notes",
            "Highlighting",
            "Highlighting everything",
            "Understanding it at last",
        ],
    },
];

/// The image of catalog meme `id` (1-based; `None` if there is no such meme).
pub fn curated_spec(id: u32) -> Option<ImageSpec> {
    let index = usize::try_from(id.checked_sub(1)?).ok()?;
    let (format, topic) = (index / TOPICS.len(), index % TOPICS.len());
    if format >= FORMATS.len() {
        return None;
    }
    let lines = &LINES[topic];
    let name = FORMATS[format];
    let (layout, captions): (Layout, Vec<&str>) = if name.contains("Brain") || name.contains("Plan")
    {
        (Layout::Ladder, lines.ladder.to_vec())
    } else if name.contains("Drake") || name.contains("Buttons") || name.contains("Buff Doge") {
        (Layout::RejectApprove, vec![lines.choice.0, lines.choice.1])
    } else {
        let (top, bottom) = lines.pairs[format % 2];
        (Layout::TopBottom, vec![top, bottom])
    };
    Some(ImageSpec {
        layout,
        palette: (format % usize::from(PALETTE_COUNT)) as u8,
        seed: u64::from(id),
        captions: captions.into_iter().map(str::to_owned).collect(),
    })
}

/// A locale's word for the captions (kept to Latin script, which the bundled
/// font draws).
fn local_word(locale: &str) -> &'static str {
    match locale {
        "en-GB" => "innit",
        "en-AU" => "mate",
        "ja-JP" => "desu",
        "pt-BR" => "cara",
        "de-DE" => "Alter",
        "fr-FR" => "mdr",
        "hi-IN" => "yaar",
        _ => "bro",
    }
}

const TOP_BOTTOM: [(&str, &str); 6] = [
    ("{s}?", "In this economy, {l}?"),
    ("Nobody:", "Me at 3 am: {s}"),
    (
        "Me: I can quit {s} any time",
        "Also me, five minutes later: {s}",
    ),
    ("{s} is fine", "Everything is fine, {l}"),
    ("They said {s} was a phase", "The phase: year {n}"),
    ("Tell me you love {s}", "Without telling me you love {s}"),
];

const CHOICES: [(&str, &str); 4] = [
    ("Touching grass", "{s}, obviously"),
    ("{s} in moderation", "{s} with zero chill, {l}"),
    ("Sleeping eight hours", "Reading about {s} until sunrise"),
    ("A normal hobby", "Making {s} my whole personality"),
];

const LADDERS: [[&str; 4]; 3] = [
    [
        "{s}",
        "{s}, but louder",
        "{s} at 3 am",
        "{s} as a lifestyle, {l}",
    ],
    [
        "Liking {s}",
        "Loving {s}",
        "Explaining {s} at parties",
        "Founding a {s} startup",
    ],
    [
        "Hearing about {s}",
        "Trying {s}",
        "Teaching {s}",
        "Becoming {s}",
    ],
];

/// The longest subject taken from a query, in characters.
const MAX_SUBJECT_CHARS: usize = 32;

/// A new AI meme for `query` near `locale`, from `seed`: a template of the
/// grammar filled with the query's allowed words. Every caption passes
/// `filter`; a blocked query word is dropped, never shown.
pub fn ai_spec(query: &str, locale: &str, seed: u64, filter: &CaptionFilter) -> ImageSpec {
    let mut rng = Rng::new(seed);
    let mut subject = String::new();
    for word in query.split_whitespace().filter(|w| filter.allows(w)) {
        let word: String = word.chars().filter(|c| !c.is_control()).collect();
        if subject.chars().count() + word.chars().count() + 1 > MAX_SUBJECT_CHARS {
            break;
        }
        if !subject.is_empty() {
            subject.push(' ');
        }
        subject.push_str(&word);
    }
    if subject.is_empty() {
        subject.push_str("this");
    }
    let year = (2 + rng.below(9)).to_string();
    let fill = |template: &str| {
        template
            .replace("{s}", &subject)
            .replace("{l}", local_word(locale))
            .replace("{n}", &year)
    };
    let (layout, captions) = match rng.below(3) {
        0 => {
            let (a, b) = TOP_BOTTOM[rng.below(TOP_BOTTOM.len() as u64) as usize];
            (Layout::TopBottom, vec![fill(a), fill(b)])
        }
        1 => {
            let (a, b) = CHOICES[rng.below(CHOICES.len() as u64) as usize];
            (Layout::RejectApprove, vec![fill(a), fill(b)])
        }
        _ => {
            let steps = LADDERS[rng.below(LADDERS.len() as u64) as usize];
            (Layout::Ladder, steps.iter().map(|s| fill(s)).collect())
        }
    };
    // The templates are clean and every word of the subject passed; checked
    // again as a whole so that no combination slips through.
    let captions = captions
        .into_iter()
        .map(|c| if filter.allows(&c) { c } else { String::new() })
        .collect();
    ImageSpec {
        layout,
        palette: rng.below(u64::from(PALETTE_COUNT)) as u8,
        seed: rng.next(),
        captions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_meme_has_an_image_spec_with_its_layouts_captions() {
        for id in 1..=300 {
            let spec = curated_spec(id).expect("a catalog id");
            assert_eq!(spec.captions.len(), spec.layout.captions(), "meme {id}");
            assert!(spec.captions.iter().all(|c| !c.is_empty()));
        }
        assert_eq!(curated_spec(0), None);
        assert_eq!(curated_spec(301), None);
    }

    #[test]
    fn ai_memes_differ_by_seed_use_the_query_and_never_show_a_blocked_word() {
        let filter = CaptionFilter::builtin();
        let a = ai_spec("rust borrow checker", "en-AU", 1, &filter);
        let b = ai_spec("rust borrow checker", "en-AU", 2, &filter);
        assert_ne!(a, b);
        assert_eq!(a, ai_spec("rust borrow checker", "en-AU", 1, &filter));
        let seen = (0..20)
            .map(|seed| ai_spec("rust", "en-AU", seed, &filter).captions.join(" "))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(seen.contains("rust"), "{seen}");
        assert!(seen.contains("mate"), "{seen}");
        for seed in 0..50 {
            let spec = ai_spec("nazi b0mb pizza", "de-DE", seed, &filter);
            for caption in &spec.captions {
                assert!(filter.allows(caption), "{caption}");
                assert!(!caption.to_lowercase().contains("nazi"));
            }
        }
    }
}
