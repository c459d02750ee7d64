//! The hash maps of the node's hot paths, with a faster seeded hasher.
//!
//! std's default hasher, SipHash-1-3, was 4.6 % of a spend's user-space
//! instructions (`benches/instructions.sh`; benches/README.md, session 17).
//! A spend looks up its user, its token, its route and its waiting reply,
//! and the group commit its changed keys. foldhash, hashbrown's own default
//! and already in the tree through it, hashes a short key in a fraction of
//! that. Like std's, it is seeded at random per process, so keys a client
//! chooses (user ids, query words) cannot be picked to collide without the
//! seed. Nothing may depend on these maps' iteration order, as with std's.

/// A `HashMap` with foldhash.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with foldhash.
pub(crate) type Set<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
