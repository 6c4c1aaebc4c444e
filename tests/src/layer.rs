//! Deterministic layer tars, written header by header by this module (not by
//! the tar crate's `Builder`), so that any entry can be expressed, hostile
//! ones included: names with `..` or a leading `/`, links pointing anywhere,
//! device nodes, headers declaring more data than follows, or a whole
//! hand-made 512-byte header.
//!
//! Every entry gets mtime 0 and the builder's owner (0:0 unless
//! [`LayerBuilder::owner`] says otherwise); entries appear in the order they
//! are added. Long names use GNU `././@LongLink` entries ([`TarFormat::Gnu`],
//! the default) or a ustar prefix / PAX `path` record ([`TarFormat::Ustar`]).

use std::io::Write;

use crate::{sha256, Result, TestbedError};

pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

const BLOCK: usize = 512;

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    /// gzip level 6, header mtime 0, no file name.
    Gzip,
    /// zstd level 3.
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => LAYER_TAR,
            Compression::Gzip => LAYER_GZIP,
            Compression::Zstd => LAYER_ZSTD,
        }
    }
}

/// Header flavour of the tar stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TarFormat {
    /// magic `ustar ` + version ` \0`; long names as `././@LongLink`.
    #[default]
    Gnu,
    /// POSIX magic `ustar\0` + `00`; long names split into prefix/name, else
    /// a PAX extended header.
    Ustar,
}

/// A built layer. Its size is [`Layer::size`] (the blob length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub media_type: String,
    /// The bytes to upload (compressed as `media_type` says).
    pub blob: Vec<u8>,
    /// sha256 of `blob`.
    pub digest: String,
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
}

impl Layer {
    /// Size of the blob in bytes (the manifest descriptor's `size`).
    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }
}

/// One entry with every header field under the caller's control. Nothing is
/// validated: names and link names are written as given.
#[derive(Clone, Debug)]
pub struct RawEntry {
    /// Type flag byte: `b'0'` file, `b'1'` hard link, `b'2'` symlink,
    /// `b'3'` char device, `b'4'` block device, `b'5'` directory, ...
    pub kind: u8,
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Data following the header (padded to 512 bytes).
    pub data: Vec<u8>,
    /// Size written into the header; `None` = `data.len()`. Declaring more
    /// than `data` and calling [`LayerBuilder::unterminated`] gives a tar
    /// that ends in the middle of this entry.
    pub declared_size: Option<u64>,
    pub device: Option<(u32, u32)>,
}

impl RawEntry {
    /// An entry of type `kind` (a tar type flag, e.g. `b'0'` or
    /// `tar::EntryType::Regular.as_byte()`), mode 0644, owner 0:0.
    pub fn new(kind: u8, name: impl AsRef<[u8]>) -> Self {
        RawEntry {
            kind,
            name: name.as_ref().to_vec(),
            link: Vec::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            data: Vec::new(),
            declared_size: None,
            device: None,
        }
    }
}

/// Builds one layer tar in memory. Writing to memory cannot fail, so the
/// entry methods chain without `Result`s.
#[derive(Clone, Debug, Default)]
pub struct LayerBuilder {
    out: Vec<u8>,
    format: TarFormat,
    uid: u64,
    gid: u64,
    terminated: bool,
    /// Mode of each regular file added, for hard links to it.
    modes: std::collections::HashMap<String, u32>,
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    let b = s.as_bytes();
    // Values too large for the field keep their low digits (hostile use only).
    let b = &b[b.len().saturating_sub(digits)..];
    field[..b.len()].copy_from_slice(b);
    field[digits] = 0;
}

fn put_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Recompute the checksum of a 512-byte tar header in place.
pub fn fix_checksum(header: &mut [u8; BLOCK]) {
    header[148..156].fill(b' ');
    let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(s.as_bytes());
}

impl LayerBuilder {
    /// An empty GNU-format layer.
    pub fn new() -> Self {
        LayerBuilder {
            terminated: true,
            ..Default::default()
        }
    }

    /// An empty layer with `format` headers.
    pub fn with_format(format: TarFormat) -> Self {
        LayerBuilder {
            format,
            ..Self::new()
        }
    }

    /// Owner of the entries added after this call.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Leave out the two zero blocks that end an archive.
    pub fn unterminated(mut self) -> Self {
        self.terminated = false;
        self
    }

    fn header(&self, e: &RawEntry, name: &[u8], link: &[u8]) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        put_bytes(&mut h[0..100], name);
        put_octal(&mut h[100..108], u64::from(e.mode));
        put_octal(&mut h[108..116], e.uid);
        put_octal(&mut h[116..124], e.gid);
        let size = e.declared_size.unwrap_or(e.data.len() as u64);
        put_octal(&mut h[124..136], size);
        put_octal(&mut h[136..148], e.mtime);
        h[156] = e.kind;
        put_bytes(&mut h[157..257], link);
        match self.format {
            TarFormat::Gnu => h[257..265].copy_from_slice(b"ustar  \0"),
            TarFormat::Ustar => h[257..265].copy_from_slice(b"ustar\x0000"),
        }
        if let Some((major, minor)) = e.device {
            put_octal(&mut h[329..337], u64::from(major));
            put_octal(&mut h[337..345], u64::from(minor));
        }
        h
    }

    fn push_block_data(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.out.resize(self.out.len() + pad, 0);
    }

    /// A helper entry (`L`, `K` or `x`) carrying `data`.
    fn meta_entry(&mut self, kind: u8, name: &[u8], data: &[u8]) {
        let mut e = RawEntry::new(kind, name);
        e.data = data.to_vec();
        let mut h = self.header(&e, name, b"");
        fix_checksum(&mut h);
        self.out.extend_from_slice(&h);
        self.push_block_data(data);
    }

    fn ustar_split(name: &[u8]) -> Option<(&[u8], &[u8])> {
        if name.len() <= 100 {
            return Some((&[], name));
        }
        (0..name.len())
            .rev()
            .filter(|&i| name[i] == b'/')
            .map(|i| (&name[..i], &name[i + 1..]))
            .find(|(p, n)| p.len() <= 155 && n.len() <= 100 && !n.is_empty())
    }

    /// Append an entry exactly as described (long names are still encoded
    /// so that readers see the full name).
    pub fn raw_entry(mut self, e: RawEntry) -> Self {
        let mut name: &[u8] = &e.name;
        let mut prefix: &[u8] = &[];
        let mut link: &[u8] = &e.link;
        match self.format {
            TarFormat::Gnu => {
                if e.link.len() > 100 {
                    let mut d = e.link.clone();
                    d.push(0);
                    self.meta_entry(b'K', b"././@LongLink", &d);
                    link = &e.link[..100];
                }
                if e.name.len() > 100 {
                    let mut d = e.name.clone();
                    d.push(0);
                    self.meta_entry(b'L', b"././@LongLink", &d);
                    name = &e.name[..100];
                }
            }
            TarFormat::Ustar => {
                let mut pax = Vec::new();
                match Self::ustar_split(&e.name) {
                    Some((p, n)) => (prefix, name) = (p, n),
                    None => {
                        pax.extend(pax_record(b"path", &e.name));
                        name = &e.name[..100];
                    }
                }
                if e.link.len() > 100 {
                    pax.extend(pax_record(b"linkpath", &e.link));
                    link = &e.link[..100];
                }
                if !pax.is_empty() {
                    self.meta_entry(b'x', b"PaxHeaders/entry", &pax);
                }
            }
        }
        let mut h = self.header(&e, name, link);
        put_bytes(&mut h[345..500], prefix);
        fix_checksum(&mut h);
        self.out.extend_from_slice(&h);
        self.push_block_data(&e.data);
        self
    }

    fn entry(&self, kind: tar::EntryType, path: &str, mode: u32) -> RawEntry {
        let mut e = RawEntry::new(kind.as_byte(), path);
        e.mode = mode;
        e.uid = self.uid;
        e.gid = self.gid;
        e
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        let mut p = path.trim_end_matches('/').to_string();
        p.push('/');
        let e = self.entry(tar::EntryType::Directory, &p, mode);
        self.raw_entry(e)
    }

    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.modes.insert(path.to_string(), mode);
        let mut e = self.entry(tar::EntryType::Regular, path, mode);
        e.data = data.to_vec();
        self.raw_entry(e)
    }

    pub fn file_owned(self, path: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Self {
        let mut e = self.entry(tar::EntryType::Regular, path, mode);
        (e.uid, e.gid) = (uid, gid);
        e.data = data.to_vec();
        self.raw_entry(e)
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        let mut e = self.entry(tar::EntryType::Symlink, path, 0o777);
        e.link = target.as_bytes().to_vec();
        self.raw_entry(e)
    }

    /// A hard link `path` to `target` (a path in the archive, no leading `/`).
    /// A hard link; its header carries the target's mode (Docker and
    /// containerd apply a link entry's mode to the shared inode).
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        let mode = self.modes.get(target).copied().unwrap_or(0o644);
        let mut e = self.entry(tar::EntryType::Link, path, mode);
        e.link = target.as_bytes().to_vec();
        self.raw_entry(e)
    }

    /// Hide `path` of lower layers (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> Self {
        let wh = match path.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.wh.{name}"),
            None => format!(".wh.{path}"),
        };
        self.file(&wh, 0o644, b"")
    }

    /// Make `dir` opaque (`dir/.wh..wh..opq`): lower layers' contents of
    /// `dir` are hidden.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(
            &format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            0o644,
            b"",
        )
    }

    /// An entry whose name and link name are raw bytes (no checks at all).
    pub fn raw(self, kind: tar::EntryType, name: &[u8], link: &[u8], data: &[u8]) -> Self {
        let mut e = self.entry(kind, "", 0o644);
        e.name = name.to_vec();
        e.link = link.to_vec();
        e.data = data.to_vec();
        self.raw_entry(e)
    }

    /// A character (`tar::EntryType::Char`) or block (`Block`) device node.
    pub fn device(self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut e = self.entry(kind, path, 0o666);
        e.device = Some((major, minor));
        self.raw_entry(e)
    }

    /// A regular file whose header declares `declared_size` bytes but only
    /// `data` follows, and the archive ends there: a truncated layer.
    pub fn truncated_file(self, path: &str, declared_size: u64, data: &[u8]) -> Self {
        let mut e = self.entry(tar::EntryType::Regular, path, 0o644);
        e.data = data.to_vec();
        e.declared_size = Some(declared_size);
        let mut b = self.raw_entry(e);
        // Drop the padding too: the stream stops right after `data`.
        let cut = b.out.len() - ((BLOCK - data.len() % BLOCK) % BLOCK);
        b.out.truncate(cut);
        b.unterminated()
    }

    /// Append a caller-made 512-byte header (checksum recomputed when
    /// `fix_cksum`) followed by `data` padded to a block.
    pub fn raw_header(mut self, mut header: [u8; BLOCK], fix_cksum: bool, data: &[u8]) -> Self {
        if fix_cksum {
            fix_checksum(&mut header);
        }
        self.out.extend_from_slice(&header);
        self.push_block_data(data);
        self
    }

    /// Append arbitrary bytes to the stream.
    pub fn raw_bytes(mut self, bytes: &[u8]) -> Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// The uncompressed tar bytes.
    pub fn into_tar(mut self) -> Vec<u8> {
        if self.terminated {
            self.out.resize(self.out.len() + 2 * BLOCK, 0);
        }
        self.out
    }

    /// Compress into a layer.
    pub fn try_finish(self, compression: Compression) -> Result<Layer> {
        layer_from_tar(self.into_tar(), compression)
    }

    /// Compress into a layer.
    ///
    /// # Panics
    /// Only if the in-memory compressor reports an error, which it does not
    /// for `Vec` sinks; use [`LayerBuilder::try_finish`] to get a `Result`.
    pub fn finish(self, compression: Compression) -> Layer {
        match self.try_finish(compression) {
            Ok(l) => l,
            Err(e) => panic!("building a layer: {e}"),
        }
    }
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    // "LEN key=value\n" where LEN counts the whole record, itself included.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Compress bytes as a layer blob.
pub fn compress(tar: &[u8], compression: Compression) -> Result<Vec<u8>> {
    let err = |source| TestbedError::Io {
        what: "compress",
        path: format!("{compression:?} layer"),
        source,
    };
    match compression {
        Compression::None => Ok(tar.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::new(6));
            enc.write_all(tar).map_err(err)?;
            enc.finish().map_err(err)
        }
        Compression::Zstd => zstd::encode_all(tar, 3).map_err(err),
    }
}

/// Compress a tar into a layer.
pub fn layer_from_tar(tar: Vec<u8>, compression: Compression) -> Result<Layer> {
    let blob = compress(&tar, compression)?;
    Ok(Layer {
        media_type: compression.media_type().into(),
        digest: sha256(&blob),
        diff_id: sha256(&tar),
        blob,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    type Listing = Vec<(u8, Vec<u8>, Vec<u8>)>;

    fn names(tar_bytes: &[u8]) -> std::io::Result<Listing> {
        let mut a = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for e in a.entries()? {
            let mut e = e?;
            let kind = e.header().entry_type().as_byte();
            let name = e.path_bytes().to_vec();
            let link = e.link_name_bytes().map(|l| l.to_vec()).unwrap_or_default();
            let mut sink = Vec::new();
            e.read_to_end(&mut sink)?;
            out.push((kind, name, link));
        }
        Ok(out)
    }

    #[test]
    fn hostile_entries_survive_verbatim() -> std::io::Result<()> {
        let long = format!("deep/{}/file", "x".repeat(120));
        for format in [TarFormat::Gnu, TarFormat::Ustar] {
            let t = LayerBuilder::with_format(format)
                .raw(tar::EntryType::Regular, b"../../etc/evil", b"", b"x")
                .raw(tar::EntryType::Regular, b"/etc/evil", b"", b"x")
                .symlink("link", "../../../../etc")
                .file("link/passwd", 0o644, b"root::0:0::/:/bin/sh\n")
                .raw(tar::EntryType::Link, b"hl", b"../../etc/passwd", b"")
                .hardlink("hl2", "missing")
                .device("null", tar::EntryType::Char, 1, 3)
                .device("sda", tar::EntryType::Block, 8, 0)
                .file(&long, 0o600, b"long")
                .into_tar();
            let got = names(&t)?;
            let expect: Vec<(u8, &[u8], &[u8])> = vec![
                (b'0', b"../../etc/evil", b""),
                (b'0', b"/etc/evil", b""),
                (b'2', b"link", b"../../../../etc"),
                (b'0', b"link/passwd", b""),
                (b'1', b"hl", b"../../etc/passwd"),
                (b'1', b"hl2", b"missing"),
                (b'3', b"null", b""),
                (b'4', b"sda", b""),
                (b'0', long.as_bytes(), b""),
            ];
            let got: Vec<(u8, &[u8], &[u8])> = got
                .iter()
                .map(|(k, n, l)| (*k, n.as_slice(), l.as_slice()))
                .collect();
            assert_eq!(got, expect, "{format:?}");
        }
        Ok(())
    }

    #[test]
    fn headers_carry_modes_owners_and_devices() -> std::io::Result<()> {
        let t = LayerBuilder::new()
            .owner(33, 33)
            .dir("www", 0o1777)
            .device("null", tar::EntryType::Char, 1, 3)
            .into_tar();
        let mut a = tar::Archive::new(&t[..]);
        let hs: Vec<tar::Header> = a
            .entries()?
            .map(|e| e.map(|e| e.header().clone()))
            .collect::<std::io::Result<_>>()?;
        assert_eq!(hs[0].mode()?, 0o1777);
        assert_eq!((hs[0].uid()?, hs[0].gid()?, hs[0].mtime()?), (33, 33, 0));
        assert_eq!(hs[1].device_major()?, Some(1));
        assert_eq!(hs[1].device_minor()?, Some(3));
        Ok(())
    }

    #[test]
    fn truncated_and_bad_checksum_tars_fail_to_read() -> Result<()> {
        let t = LayerBuilder::new()
            .file("ok", 0o644, b"fine")
            .truncated_file("big", 100_000, &[7u8; 1000])
            .into_tar();
        assert_eq!(t.len(), 3 * 512 + 1000);
        assert!(names(&t).is_err(), "truncated entry is an error");

        let mut h = [0u8; 512];
        h[..4].copy_from_slice(b"oops");
        h[156] = b'0';
        for (range, v) in [
            (100..108, 0o644),
            (108..116, 0),
            (116..124, 0),
            (124..136, 0),
            (136..148, 0),
        ] {
            put_octal(&mut h[range], v);
        }
        let bad = LayerBuilder::new().raw_header(h, false, b"").into_tar();
        assert!(names(&bad).is_err(), "bad checksum is an error");
        let good = LayerBuilder::new().raw_header(h, true, b"").into_tar();
        assert!(names(&good).is_ok());

        let a = LayerBuilder::new()
            .file("f", 0o644, b"x")
            .try_finish(Compression::Gzip)?;
        let b = LayerBuilder::new()
            .file("f", 0o644, b"x")
            .try_finish(Compression::Gzip)?;
        assert_eq!(a, b);
        let z = LayerBuilder::new()
            .file("f", 0o644, b"x")
            .try_finish(Compression::Zstd)?;
        assert_eq!(z.diff_id, a.diff_id);
        assert_eq!(z.media_type, LAYER_ZSTD);
        assert_eq!(&a.blob[4..8], &[0, 0, 0, 0], "gzip mtime 0");
        Ok(())
    }
}
