//! One-time tokens in streaming URLs: each names a pending Exec, Attach or
//! PortForward request, is good for one connection and expires after a
//! minute.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::proto;

const TTL: Duration = Duration::from_secs(60);
const MAX_PENDING: usize = 1000;

#[derive(Clone, Debug)]
pub enum Pending {
    Exec(proto::ExecRequest),
    Attach(proto::AttachRequest),
    PortForward(proto::PortForwardRequest),
}

#[derive(Default)]
pub struct Tokens {
    inner: Mutex<HashMap<String, (Instant, Pending)>>,
}

fn random_token() -> std::io::Result<String> {
    let mut b = [0u8; 18];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

impl Tokens {
    /// Store `p`; its token, or `None` when too many are pending.
    pub fn insert(&self, p: Pending) -> std::io::Result<Option<String>> {
        let token = random_token()?;
        let Ok(mut m) = self.inner.lock() else {
            return Ok(None);
        };
        let now = Instant::now();
        m.retain(|_, (t, _)| now.duration_since(*t) < TTL);
        if m.len() >= MAX_PENDING {
            return Ok(None);
        }
        m.insert(token.clone(), (now, p));
        Ok(Some(token))
    }

    /// The request for `token`, once.
    pub fn take(&self, token: &str) -> Option<Pending> {
        let mut m = self.inner.lock().ok()?;
        let (t, p) = m.remove(token)?;
        (t.elapsed() < TTL).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_unguessable() {
        let t = Tokens::default();
        let a = t
            .insert(Pending::Attach(Default::default()))
            .ok()
            .flatten()
            .unwrap_or_default();
        let b = t
            .insert(Pending::Attach(Default::default()))
            .ok()
            .flatten()
            .unwrap_or_default();
        assert!(a.len() >= 24 && a != b);
        assert!(t.take(&a).is_some());
        assert!(t.take(&a).is_none());
        assert!(t.take("nope").is_none());
    }
}
