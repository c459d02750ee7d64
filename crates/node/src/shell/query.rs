//! A URL query's name-value pairs, exactly as `form_urlencoded::parse` gives
//! them, without decoding a query that holds nothing to decode; and the
//! values of the parameters a route takes, by name.
//!
//! Why in place: decoding each piece (percent-decoding, then a lossy UTF-8
//! check) cost a spend about 1,600 instructions (`benches/instructions.sh`),
//! for `lat`, `lon` and a word, which rarely hold an escape. A query is
//! already a `str`, so without `%` or `+` each piece is its own decoding.
//!
//! Why by name, strictly: a misspelt parameter that is ignored changes
//! nothing, and the client never learns why. A route with parameters refuses
//! one it does not take, or one given twice, as JSON bodies refuse unknown
//! fields.

use crate::shell::problem::{Problem, ProblemKind};
use std::borrow::Cow;
use std::ops::RangeInclusive;

/// The pairs of `query` (what follows `?`), in order: empty pieces skipped,
/// a piece without `=` a name with an empty value.
pub(crate) fn pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let plain = !query.contains(['%', '+']);
    let split = plain.then(|| {
        query.split('&').filter(|p| !p.is_empty()).map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            (Cow::Borrowed(name), Cow::Borrowed(value))
        })
    });
    let decoded = (!plain).then(|| form_urlencoded::parse(query.as_bytes()));
    split
        .into_iter()
        .flatten()
        .chain(decoded.into_iter().flatten())
}

/// The values of `query`'s parameters, in the order of `names` (`None`
/// where one is not given); a parameter not in `names`, or given twice, is
/// an `invalid-request` problem naming it.
#[inline]
pub(crate) fn named<'a, const N: usize>(
    query: &'a str,
    names: [&str; N],
) -> Result<[Option<Cow<'a, str>>; N], Problem> {
    let bad = |detail: String| Problem::new(ProblemKind::InvalidRequest, detail);
    let mut values: [Option<Cow<'a, str>>; N] = std::array::from_fn(|_| None);
    for (name, value) in pairs(query) {
        let Some(at) = names.iter().position(|n| *n == name) else {
            return Err(bad(format!(
                "unknown query parameter `{}`",
                truncate(&name)
            )));
        };
        if values[at].replace(value).is_some() {
            return Err(bad(format!("query parameter `{}` given twice", names[at])));
        }
    }
    Ok(values)
}

/// The parameter `name`'s `value` as a whole number within `range`, or an
/// `invalid-request` problem saying what it must be: `unit` names what the
/// number counts ("a whole number", "whole milliseconds").
pub(crate) fn whole_in(
    name: &str,
    value: &str,
    range: RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, Problem> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            Problem::new(
                ProblemKind::InvalidRequest,
                format!(
                    "`{name}` must be {unit} from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// At most the first 40 characters of `s`, to quote the client's input in an
/// error without echoing all of it.
pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any query reads as `form_urlencoded` reads it, escapes or not.
        #[test]
        fn pairs_are_what_form_urlencoded_gives(
            query in "[a-z=&%+0-9A-F.é -]{0,40}",
        ) {
            let ours: Vec<_> = pairs(&query).collect();
            let theirs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn a_plain_query_is_split_in_place() {
        let got: Vec<_> = pairs("lat=40.73&&lon=-73.93&query=food&flag&=x").collect();
        assert_eq!(
            got,
            [
                ("lat", "40.73"),
                ("lon", "-73.93"),
                ("query", "food"),
                ("flag", ""),
                ("", "x")
            ]
            .map(|(n, v)| (Cow::Borrowed(n), Cow::Borrowed(v)))
        );
        assert!(
            got.iter()
                .all(|(n, v)| matches!((n, v), (Cow::Borrowed(_), Cow::Borrowed(_))))
        );
    }

    #[test]
    fn parameters_come_by_name_and_others_are_refused() {
        let [limit, cursor] = named("cursor=12&limit=5", ["limit", "cursor"]).unwrap();
        assert_eq!(
            (limit.as_deref(), cursor.as_deref()),
            (Some("5"), Some("12"))
        );
        let [days] = named("", ["days"]).unwrap();
        assert_eq!(days, None);
        let refused = |query: &str| {
            named(query, ["days"])
                .err()
                .map(|p| (p.kind(), p.detail().to_owned()))
        };
        assert_eq!(
            refused("days=1&dyas=2"),
            Some((
                ProblemKind::InvalidRequest,
                "unknown query parameter `dyas`".to_owned()
            ))
        );
        assert_eq!(
            refused("days=1&days=2"),
            Some((
                ProblemKind::InvalidRequest,
                "query parameter `days` given twice".to_owned()
            ))
        );
        // An escaped name is the name it spells.
        assert_eq!(
            refused("d%61ys=1&days=2").map(|(_, d)| d),
            Some("query parameter `days` given twice".to_owned())
        );
    }

    #[test]
    fn a_whole_number_out_of_range_or_not_a_number_says_what_it_must_be() {
        assert_eq!(
            whole_in("wait", " 250", 0..=10_000, "whole milliseconds").ok(),
            Some(250)
        );
        for value in ["10001", "-1", "1.5", "soon", ""] {
            let refused = whole_in("wait", value, 0..=10_000, "whole milliseconds")
                .err()
                .map(|p| (p.kind(), p.detail().to_owned()));
            assert_eq!(
                refused,
                Some((
                    ProblemKind::InvalidRequest,
                    "`wait` must be whole milliseconds from 0 to 10000".to_owned()
                )),
                "{value:?}"
            );
        }
    }
}
