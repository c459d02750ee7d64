//! A URL query's name-value pairs, exactly as `form_urlencoded::parse` gives
//! them, without decoding a query that holds nothing to decode.
//!
//! Why: decoding each piece (percent-decoding, then a lossy UTF-8 check)
//! cost a spend about 1,600 instructions (`benches/instructions.sh`), for
//! `lat`, `lon` and a word, which rarely hold an escape. A query is already
//! a `str`, so without `%` or `+` each piece is its own decoding.

use std::borrow::Cow;

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
}
