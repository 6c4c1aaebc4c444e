//! Parsed state files (the runtime's `meta.json`s, the CRI's records) kept
//! in memory with the bytes they were parsed from. Reading a small file
//! costs microseconds; parsing it costs much more. A lookup reads the
//! file and, when its bytes are those last parsed, answers the kept value:
//! a file another process rewrote or removed is parsed again (or reported
//! missing) as before, with no reliance on timestamps or inode numbers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// Parsed files of one kind by ID.
#[derive(Debug)]
pub struct Cache<T> {
    map: Mutex<HashMap<String, (Vec<u8>, T)>>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Cache<T> {
    /// The content of `path` (ID `id`) parsed by `parse`, or the value
    /// kept from the last parse of the same bytes.
    pub fn read<E>(
        &self,
        id: &str,
        path: &Path,
        parse: impl FnOnce(&[u8]) -> Result<T, E>,
        io: impl FnOnce(std::io::Error) -> E,
    ) -> Result<T, E> {
        let b = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                self.forget(id);
                return Err(io(e));
            }
        };
        if let Some((kept, v)) = self.lock().get(id) {
            if *kept == b {
                return Ok(v.clone());
            }
        }
        let v = parse(&b)?;
        self.lock().insert(id.to_string(), (b, v.clone()));
        Ok(v)
    }

    /// Drop the kept value of `id`.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Keep only the values whose IDs `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|id, _| keep(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, T)>> {
        // A panic while holding the lock cannot leave the map half
        // changed (single inserts and removes): keep using it.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<String, String> {
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    #[test]
    fn parses_changed_bytes_only_and_forgets_a_removed_file() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path().join("a.json");
        let c: Cache<String> = Cache::default();
        std::fs::write(&p, "one").unwrap_or_else(|e| panic!("{e}"));
        let r = c.read("a", &p, parse, |e| e.to_string());
        assert_eq!(r.as_deref(), Ok("one"));
        // Replaced with content of the same length (timestamps and inode
        // numbers are not trusted).
        let tmp = d.path().join("a.json.tmp");
        std::fs::write(&tmp, "two").unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&tmp, &p).unwrap_or_else(|e| panic!("{e}"));
        let r = c.read("a", &p, parse, |e| e.to_string());
        assert_eq!(r.as_deref(), Ok("two"));
        // Unchanged: the kept value, no parse.
        let r = c.read("a", &p, |_| Err("parsed".to_string()), |e| e.to_string());
        assert_eq!(r.as_deref(), Ok("two"));
        std::fs::remove_file(&p).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.read("a", &p, parse, |e| e.to_string()).is_err());
        assert!(c.lock().is_empty());
    }
}
