//! A small mutation fuzzer on stable Rust, for the parsers that take
//! outside input. Each target is a unit test in the crate that owns the
//! parser (so private parsers can be reached) calling [`run`]: seeds come
//! from `tests/fuzz/<target>/` (committed; inputs that once crashed stay
//! there as regression inputs), each execution mutates one seed (bit
//! flips, interesting bytes, inserted tokens, deleted or repeated ranges,
//! splices with another seed, truncation) and hands the bytes to the
//! target. A panic is a finding: the input is written to
//! `$TMPDIR/podctl-fuzz-<target>-<n>.bin` and the test fails naming it.
//!
//! The run is deterministic for a seed (`PODCTL_FUZZ_SEED`, default 1) and
//! bounded (`PODCTL_FUZZ_ITERS` executions, default the target's own,
//! small enough for every `cargo test`); `scripts/test.sh` runs every
//! target again with more and prints `fuzz: <target>: <n> executions ...`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub executions: u64,
    pub seeds: usize,
}

/// The committed seeds of `target`.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(target)
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz target {target}: no corpus at {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let out: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    assert!(!out.is_empty(), "fuzz target {target}: empty corpus");
    out
}

/// xorshift64*: deterministic, fast, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'/', b'.', b':', b'@', b'=', b'"', b',', b' ', b'\n', b'\\', b'%',
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, others: &[Vec<u8>], tokens: &[&[u8]]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                input.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                let piece = input[a..b].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, piece);
            }
            5 if !others.is_empty() => {
                let other = &others[rng.below(others.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            6 if !tokens.is_empty() => {
                let t = tokens[rng.below(tokens.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, t.iter().copied());
            }
            7 if len > 0 => input.truncate(rng.below(len)),
            _ => {}
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Run `target` over its corpus and `iterations` mutated inputs (or
/// `PODCTL_FUZZ_ITERS`), with `tokens` (the format's keywords) among the
/// mutations; every seed also runs unchanged first. Panics on the first
/// input that makes `f` panic, after saving it.
pub fn run(target: &str, iterations: u64, tokens: &[&[u8]], f: impl Fn(&[u8])) -> Stats {
    let seeds = seeds(target);
    let iterations = env_u64("PODCTL_FUZZ_ITERS").unwrap_or(iterations);
    let seed = env_u64("PODCTL_FUZZ_SEED").unwrap_or(1);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ fnv(target) | 1);
    let exec = |n: u64, input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
            let path = std::env::temp_dir().join(format!("podctl-fuzz-{target}-{n}.bin"));
            let _ = std::fs::write(&path, input);
            panic!(
                "fuzz target {target}: execution {n} panicked; input saved to {} \
                 (add it to {} once fixed)",
                path.display(),
                corpus_dir(target).display()
            );
        }
    };
    let mut n = 0;
    for s in &seeds {
        exec(n, s);
        n += 1;
    }
    for _ in 0..iterations {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut input, &seeds, tokens);
        exec(n, &input);
        n += 1;
    }
    println!(
        "fuzz: {target}: {n} executions, {} seeds, seed {seed}, 0 crashes",
        seeds.len()
    );
    Stats {
        executions: n,
        seeds: seeds.len(),
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_deterministic_and_vary() {
        let seeds = vec![b"docker.io/library/busybox:latest".to_vec()];
        let go = || {
            let mut rng = Rng(42);
            (0..50)
                .map(|_| {
                    let mut i = seeds[0].clone();
                    mutate(&mut rng, &mut i, &seeds, &[b"@sha256:"]);
                    i
                })
                .collect::<Vec<_>>()
        };
        let a = go();
        assert_eq!(a, go());
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 40, "{}", distinct.len());
    }
}
