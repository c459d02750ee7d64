//! A byte-bounded cache of encoded PNGs, oldest out first.
//!
//! Images are pure functions of their specs, so a miss costs a render, never
//! a wrong answer; first-in-first-out is enough (no bookkeeping on a hit).

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Encoded PNGs by image id, at most `capacity` bytes of them.
#[derive(Debug)]
pub struct ImageCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    images: HashMap<String, Bytes>,
    order: VecDeque<String>,
    bytes: usize,
}

impl ImageCache {
    /// A cache holding at most `capacity` bytes of images.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The image `id`, if cached.
    pub fn get(&self, id: &str) -> Option<Bytes> {
        self.lock().images.get(id).cloned()
    }

    /// Caches `png` as image `id`, dropping the oldest images to make room.
    /// An image larger than the whole cache is not kept.
    pub fn put(&self, id: &str, png: Bytes) {
        if png.len() > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if inner.images.contains_key(id) {
            return;
        }
        while inner.bytes + png.len() > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.images.remove(&oldest) {
                inner.bytes -= old.len();
            }
        }
        inner.bytes += png.len();
        inner.order.push_back(id.to_owned());
        inner.images.insert(id.to_owned(), png);
    }

    /// Bytes cached now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every method leaves the maps consistent before it can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_images_leave_when_the_bytes_run_out() {
        let cache = ImageCache::new(10);
        cache.put("a", Bytes::from_static(b"aaaa"));
        cache.put("b", Bytes::from_static(b"bbbb"));
        cache.put("c", Bytes::from_static(b"cccc"));
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.get("c").as_deref(), Some(&b"cccc"[..]));
        assert!(cache.bytes() <= 10);
        cache.put("huge", Bytes::from(vec![0; 11]));
        assert_eq!(cache.get("huge"), None);
    }
}
