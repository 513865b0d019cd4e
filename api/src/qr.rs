//! The formats the api serves QR codes of device configs in (rendered by
//! [`wgsub_devices::qr`]) and the bounded cache of rendered codes. Rendering a PNG costs
//! milliseconds of CPU, and the Mini App asks for the same code on every visit of the Keys
//! tab, so a code is rendered once per distinct config: the
//! cache key is the SHA-256 of the format and the config text, so any change of key, address,
//! server or name is a new entry, and a stale image can never be served. Entries hold only the
//! image (the config text itself is not kept); the oldest go first when the cache is full.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::body::Bytes;
use sha2::{Digest as _, Sha256};
use wgsub_devices::qr::{QrError, qr_png, qr_svg};

/// Side of the rendered image, in pixels (at least).
const MIN_PIXELS: u32 = 320;

/// The image formats a code is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QrImage {
    Png,
    Svg,
}

impl QrImage {
    pub fn content_type(self) -> &'static str {
        match self {
            QrImage::Png => "image/png",
            QrImage::Svg => "image/svg+xml",
        }
    }

    fn tag(self) -> &'static [u8] {
        match self {
            QrImage::Png => b"png\0",
            QrImage::Svg => b"svg\0",
        }
    }

    /// Renders `text` as a QR code in this format.
    pub fn render(self, text: &str) -> Result<Bytes, QrError> {
        match self {
            QrImage::Png => qr_png(text, MIN_PIXELS).map(Bytes::from),
            QrImage::Svg => qr_svg(text, MIN_PIXELS).map(Bytes::from),
        }
    }
}

type Key = [u8; 32];

#[derive(Default)]
struct Entries {
    images: HashMap<Key, Bytes>,
    /// Insertion order, oldest first.
    order: VecDeque<Key>,
}

/// Rendered QR codes by (format, config text) digest, at most `capacity` of them.
pub struct QrCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for QrCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl QrCache {
    /// Room for 1024 codes (a PNG is about 5 KB).
    pub const DEFAULT_CAPACITY: usize = 1024;

    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(Entries::default()),
        }
    }

    fn key(format: QrImage, text: &str) -> Key {
        let mut digest = Sha256::new();
        digest.update(format.tag());
        digest.update(text.as_bytes());
        digest.finalize().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the maps inconsistent with each other in
        // a way that matters: at worst an order entry without an image, which eviction skips.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Number of cached codes.
    pub fn len(&self) -> usize {
        self.lock().images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached code of `text`, if any.
    pub fn get(&self, format: QrImage, text: &str) -> Option<Bytes> {
        self.lock().images.get(&Self::key(format, text)).cloned()
    }

    /// Stores the code of `text`, evicting the oldest codes beyond the capacity.
    pub fn insert(&self, format: QrImage, text: &str, image: Bytes) {
        let key = Self::key(format, text);
        let mut entries = self.lock();
        if entries.images.insert(key, image).is_none() {
            entries.order.push_back(key);
        }
        while entries.images.len() > self.capacity {
            match entries.order.pop_front() {
                Some(oldest) => {
                    entries.images.remove(&oldest);
                }
                None => break,
            }
        }
    }

    /// The code of `text`: from the cache, or rendered on a blocking thread (rendering is CPU
    /// work that must not stall the async workers) and cached.
    pub async fn get_or_render(
        &self,
        format: QrImage,
        text: zeroize::Zeroizing<String>,
    ) -> Result<Bytes, String> {
        if let Some(image) = self.get(format, &text) {
            return Ok(image);
        }
        let (text, image) = tokio::task::spawn_blocking(move || {
            let image = format.render(&text);
            (text, image)
        })
        .await
        .map_err(|e| format!("the QR renderer failed: {e}"))?;
        let image = image.map_err(|e| e.to_string())?;
        self.insert(format, &text, image.clone());
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    #[tokio::test]
    async fn a_code_is_rendered_once_per_config_and_format() {
        let cache = QrCache::new(8);
        let text = || Zeroizing::new("[Interface]\nAddress = 10.8.0.2/32\n".to_owned());
        let png = cache.get_or_render(QrImage::Png, text()).await.unwrap();
        assert_eq!(png, Bytes::from(qr_png(&text(), MIN_PIXELS).unwrap()));
        assert_eq!(cache.len(), 1);
        // Served from the cache: a marker image stored under the same key comes back.
        cache.insert(QrImage::Png, &text(), Bytes::from_static(b"cached"));
        assert_eq!(
            cache.get_or_render(QrImage::Png, text()).await.unwrap(),
            Bytes::from_static(b"cached")
        );
        let svg = cache.get_or_render(QrImage::Svg, text()).await.unwrap();
        assert!(svg.starts_with(b"<?xml") || svg.starts_with(b"<svg"));
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn a_changed_config_is_a_new_code() {
        let cache = QrCache::new(8);
        let first = Zeroizing::new("[Interface]\nAddress = 10.8.0.2/32\n".to_owned());
        let second = Zeroizing::new("[Interface]\nAddress = 10.8.0.3/32\n".to_owned());
        cache.insert(QrImage::Png, &first, Bytes::from_static(b"first"));
        let rendered = cache.get_or_render(QrImage::Png, second).await.unwrap();
        assert_eq!(&rendered[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_oldest_codes_are_evicted_beyond_the_capacity() {
        let cache = QrCache::new(2);
        for text in ["a", "b", "c"] {
            cache.insert(QrImage::Png, text, Bytes::from(text.to_owned()));
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(QrImage::Png, "a"), None);
        assert_eq!(cache.get(QrImage::Png, "c"), Some(Bytes::from_static(b"c")));
        // Re-inserting a present code does not grow the cache or reorder eviction.
        cache.insert(QrImage::Png, "b", Bytes::from_static(b"b2"));
        cache.insert(QrImage::Png, "d", Bytes::from_static(b"d"));
        assert_eq!(cache.get(QrImage::Png, "b"), None);
        assert_eq!(cache.len(), 2);
    }
}
