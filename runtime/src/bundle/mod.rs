//! Reading Kiln bundles: the deployable file `kiln optimize` writes.
//!
//! A bundle is one file: a fixed header, a JSON [`Manifest`], the graph in
//! its text form, the external weights, each weight 64-byte aligned, and
//! optionally named assets (files such as `tokenizer.json` that travel with
//! the model). The reader maps the file and hands the weights to the graph
//! as [`TensorBytes::Mapped`] tensors and the assets out as slices of the
//! mapping, so loading copies no data. The layout is specified in
//! `docs/bundle.md`; the writer is `kiln_targets::bundle::write_bundle`.
//!
//! Nothing in a bundle is trusted before it is checked: every offset is
//! bounds-checked with overflow-checked arithmetic, and the manifest, graph,
//! weights and assets are verified against their SHA-256 on
//! [`Bundle::open`]. A damaged file yields [`RuntimeError::Bundle`], never a
//! panic.

pub mod format;

pub use format::{
    AssetEntry, AssetsSection, GraphSummary, Manifest, SectionRef, SourceInfo, ValueSummary,
    WeightEntry, WeightsSection, ALIGNMENT, FORMAT_VERSION, MAGIC, OLDEST_FORMAT_VERSION,
};

use crate::RuntimeError;
use format::{
    check_asset_name, sha256_hex, to_hex, ASSETS_SECTION, GRAPH_SECTION, HEADER_LEN,
    MANIFEST_LEN_OFFSET, MANIFEST_SHA256_OFFSET, VERSION_OFFSET, WEIGHTS_SECTION,
};
use kiln_ir::{text, DType, Graph, Tensor, TensorBytes};
use memmap2::Mmap;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An opened, verified bundle: its manifest, its graph, whose weights point
/// into the mapped file, and its assets, read from the same mapping.
pub struct Bundle {
    path: PathBuf,
    file_size: u64,
    manifest: Manifest,
    graph: Graph,
    /// Kept so assets can be lent out as slices without a copy; the graph's
    /// weights hold their own references.
    map: Arc<Mmap>,
    /// Byte range of each asset in `map`, checked on open.
    assets: BTreeMap<String, Range<usize>>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The graph can be large; the manifest says what the bundle is.
        f.debug_struct("Bundle")
            .field("path", &self.path)
            .field("file_size", &self.file_size)
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

/// True when the file at `path` starts with the bundle magic bytes.
///
/// Only the first eight bytes are read, so the CLI can tell a bundle from a
/// source model cheaply; an unreadable file is not a bundle.
pub fn is_bundle(path: impl AsRef<Path>) -> bool {
    let mut magic = [0u8; MAGIC.len()];
    File::open(path.as_ref())
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == MAGIC
}

impl Bundle {
    /// Maps the bundle at `path`, checks its header, manifest, section
    /// bounds and checksums, and rebuilds its graph with mapped weights.
    ///
    /// Every failure names the file; a damaged file says which part is
    /// truncated or corrupted.
    pub fn open(path: impl AsRef<Path>) -> Result<Bundle, RuntimeError> {
        let path = path.as_ref();
        let io = |source| RuntimeError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_size = file.metadata().map_err(io)?.len();
        let fail = |message: String| bundle_error(path, message);
        if file_size < MAGIC.len() as u64 {
            return Err(fail(not_a_bundle()));
        }
        // SAFETY: the mapping is only sound while nobody changes the file
        // underneath it, which no mmap-based loader can enforce. The writer
        // never edits a bundle in place (it renames a new file over the old
        // one), so replacing a bundle with kiln leaves open mappings intact.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let map = Arc::new(map);
        let Contents {
            manifest,
            graph,
            assets,
        } = read(&map).map_err(fail)?;
        Ok(Bundle {
            path: path.to_path_buf(),
            file_size,
            manifest,
            graph,
            map,
            assets,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The graph; its external weights are mapped from the file.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The bytes of the asset `name` (e.g. `tokenizer.json`), verified on
    /// open and borrowed from the mapping; `None` when the bundle has no
    /// asset of that name.
    pub fn asset(&self, name: &str) -> Option<&[u8]> {
        let range = self.assets.get(name)?;
        self.map.get(range.clone())
    }

    /// The names of the bundle's assets, sorted; empty when it has none.
    pub fn asset_names(&self) -> Vec<&str> {
        self.assets.keys().map(String::as_str).collect()
    }

    /// The graph, giving up the bundle. The mapping lives on as long as any
    /// of the graph's weights does.
    pub fn into_graph(self) -> Graph {
        self.graph
    }

    /// Size of the bundle file in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The path the bundle was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn bundle_error(path: &Path, message: String) -> RuntimeError {
    RuntimeError::Bundle {
        path: path.display().to_string(),
        message,
    }
}

fn not_a_bundle() -> String {
    "not a Kiln bundle (the file does not start with the magic bytes `KILNBNDL`)".to_string()
}

fn truncated(what: &str, end: u64, file_size: u64) -> String {
    format!("truncated: {what} ends at byte {end} but the file has {file_size} bytes")
}

/// The `N` header bytes at `at`; the caller has checked that the header is
/// long enough, so the error is a guard, not an expected path.
fn le_bytes<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N], String> {
    data.get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "header field out of range".to_string())
}

/// Checks that `offset..offset + length` lies in `bounds` (the whole file or
/// an enclosing section) and is aligned, and converts it to a slice range.
fn checked_range(
    what: &str,
    offset: u64,
    length: u64,
    bounds: Range<u64>,
    file_size: u64,
) -> Result<Range<usize>, String> {
    let end = offset
        .checked_add(length)
        .ok_or_else(|| format!("{what} has offset {offset} and length {length}, which overflow"))?;
    // `is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
    #[allow(clippy::manual_is_multiple_of)]
    let misaligned = offset % ALIGNMENT != 0;
    if misaligned {
        return Err(format!(
            "{what} starts at byte {offset}, which is not a multiple of {ALIGNMENT}"
        ));
    }
    if end > file_size {
        return Err(truncated(what, end, file_size));
    }
    if offset < bounds.start || end > bounds.end {
        return Err(format!(
            "{what} spans bytes {offset}..{end}, outside bytes {}..{} where it belongs",
            bounds.start, bounds.end
        ));
    }
    // Both ends are at most the file size, which fits in usize because the
    // whole file is mapped.
    let to_usize =
        |v: u64| usize::try_from(v).map_err(|_| format!("{what} is too large for this platform"));
    Ok(to_usize(offset)?..to_usize(end)?)
}

/// Checks that the alignment padding in `gap` is all zeros, as written.
fn zero_gap(data: &[u8], gap: Range<usize>, between: &str) -> Result<(), String> {
    match data.get(gap.clone()) {
        Some(bytes) if bytes.iter().all(|&b| b == 0) => Ok(()),
        Some(_) => Err(format!(
            "the padding between {between} (bytes {}..{}) is not zero; the bundle is corrupted",
            gap.start, gap.end
        )),
        None => Err(format!("the padding between {between} is out of range")),
    }
}

fn corrupted(section: &str, expected: &str, actual: &str) -> String {
    format!(
        "section `{section}` is corrupted: sha256 checksum mismatch (the manifest says {expected}, \
         the file hashes to {actual}); the bundle is damaged, rebuild or re-copy it"
    )
}

/// What [`read`] gets out of a verified file.
struct Contents {
    manifest: Manifest,
    graph: Graph,
    /// Byte range of each asset in the mapping.
    assets: BTreeMap<String, Range<usize>>,
}

/// Everything [`Bundle::open`] checks, on the mapped bytes; errors are the
/// message without the path.
fn read(map: &Arc<Mmap>) -> Result<Contents, String> {
    let data: &[u8] = map;
    let file_size = data.len() as u64;

    // Header: the magic and the version come first so a future format can
    // change everything after them and still get a clear message here.
    if data.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(not_a_bundle());
    }
    let version_end = VERSION_OFFSET + 4;
    if data.len() < version_end {
        return Err(truncated("the header", version_end as u64, file_size));
    }
    let version = u32::from_le_bytes(le_bytes(data, VERSION_OFFSET)?);
    if version > FORMAT_VERSION {
        return Err(format!(
            "bundle format version {version} is newer than this runtime supports ({FORMAT_VERSION}); \
             rebuild it with a matching kiln"
        ));
    }
    if version < OLDEST_FORMAT_VERSION {
        return Err(format!(
            "bundle format version {version} is not one this runtime reads (it reads \
             {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}); rebuild it with a matching kiln"
        ));
    }
    if data.len() < HEADER_LEN {
        return Err(truncated("the header", HEADER_LEN as u64, file_size));
    }

    // Manifest.
    let manifest_len = u64::from_le_bytes(le_bytes(data, MANIFEST_LEN_OFFSET)?);
    let manifest_end = (HEADER_LEN as u64)
        .checked_add(manifest_len)
        .ok_or_else(|| format!("the manifest length {manifest_len} overflows"))?;
    if manifest_end > file_size {
        return Err(truncated("the manifest", manifest_end, file_size));
    }
    // manifest_end <= file_size, so it fits in usize.
    let manifest_bytes = &data[HEADER_LEN..manifest_end as usize];
    let expected: [u8; 32] = le_bytes(data, MANIFEST_SHA256_OFFSET)?;
    let actual = Sha256::digest(manifest_bytes);
    if actual[..] != expected[..] {
        return Err(format!(
            "the manifest is corrupted: sha256 checksum mismatch (the header says {}, the manifest \
             hashes to {}); the bundle is damaged, rebuild or re-copy it",
            to_hex(&expected),
            to_hex(&actual)
        ));
    }
    let manifest: Manifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| format!("the manifest is not valid: {e}"))?;
    if manifest.format_version != version {
        return Err(format!(
            "the manifest says format version {} but the header says {version}",
            manifest.format_version
        ));
    }

    // Section bounds, all before any hashing, so a truncated file is
    // reported as truncated rather than as corrupted.
    let g = &manifest.graph;
    let graph_what = format!("section `{GRAPH_SECTION}`");
    let graph_range = checked_range(
        &graph_what,
        g.offset,
        g.length,
        manifest_end..file_size,
        file_size,
    )?;
    let w = &manifest.weights;
    let weights_what = format!("section `{WEIGHTS_SECTION}`");
    let weights_range = checked_range(
        &weights_what,
        w.offset,
        w.length,
        graph_range.end as u64..file_size,
        file_size,
    )?;
    let mut entries = Vec::with_capacity(w.tensors.len());
    for e in &w.tensors {
        let what = format!("weight `{}` of section `{WEIGHTS_SECTION}`", e.name);
        let dtype: DType = e.dtype.parse().map_err(|err| format!("{what}: {err}"))?;
        let dims = e
            .dims
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                format!(
                    "{what}: dimensions {:?} are too large for this platform",
                    e.dims
                )
            })?;
        let expected_len = dtype.byte_len(&dims).ok_or_else(|| {
            format!(
                "{what}: dimensions {:?} overflow or do not suit {dtype}",
                e.dims
            )
        })?;
        if expected_len as u64 != e.length {
            return Err(format!(
                "{what}: {dtype}{:?} needs {expected_len} bytes but the table says {}",
                e.dims, e.length
            ));
        }
        let section = weights_range.start as u64..weights_range.end as u64;
        let range = checked_range(&what, e.offset, e.length, section, file_size)?;
        entries.push((e, dtype, dims, range));
    }

    // Assets: only version 2 has them; names are checked because they
    // become file names when a bundle is unpacked.
    let mut assets = Vec::new();
    let mut last_section = (WEIGHTS_SECTION, weights_range.clone());
    if let Some(a) = &manifest.assets {
        if version < 2 {
            return Err(format!(
                "the manifest has an `{ASSETS_SECTION}` section, which format version {version} \
                 does not have"
            ));
        }
        let what = format!("section `{ASSETS_SECTION}`");
        let range = checked_range(
            &what,
            a.offset,
            a.length,
            weights_range.end as u64..file_size,
            file_size,
        )?;
        let section = range.start as u64..range.end as u64;
        let mut previous: Option<(&str, usize)> = None;
        for f in &a.files {
            let what = format!("asset {:?} of section `{ASSETS_SECTION}`", f.name);
            check_asset_name(&f.name).map_err(|e| format!("{what}: {e}"))?;
            let r = checked_range(&what, f.offset, f.length, section.clone(), file_size)?;
            if let Some((prev_name, prev_end)) = previous {
                if f.name.as_str() == prev_name {
                    return Err(format!("the assets table lists {:?} twice", f.name));
                }
                if f.name.as_str() < prev_name {
                    return Err(format!(
                        "the assets table is not sorted by name ({:?} comes after {prev_name:?})",
                        f.name
                    ));
                }
                if r.start < prev_end {
                    return Err(format!(
                        "{what} starts at byte {} inside asset {prev_name:?}, which ends at byte \
                         {prev_end}",
                        r.start
                    ));
                }
            }
            previous = Some((f.name.as_str(), r.end));
            assets.push((f, r));
        }
        zero_gap(
            data,
            weights_range.end..range.start,
            "section `weights` and section `assets`",
        )?;
        last_section = (ASSETS_SECTION, range);
    }

    // The alignment gaps and the end of the file: with these checked, every
    // byte of the file is covered by a check, so no corruption goes unseen.
    zero_gap(
        data,
        manifest_end as usize..graph_range.start,
        "the manifest and section `graph`",
    )?;
    zero_gap(
        data,
        graph_range.end..weights_range.start,
        "section `graph` and section `weights`",
    )?;
    let (last_name, last_range) = &last_section;
    if last_range.end != data.len() {
        return Err(format!(
            "the file has {} bytes after section `{last_name}`, which ends at byte {}; \
             the bundle is damaged",
            data.len() - last_range.end,
            last_range.end
        ));
    }

    // Checksums.
    let graph_bytes = &data[graph_range.clone()];
    let graph_sha = sha256_hex(graph_bytes);
    if graph_sha != g.sha256 {
        return Err(corrupted(GRAPH_SECTION, &g.sha256, &graph_sha));
    }
    let weights_sha = sha256_hex(&data[weights_range.clone()]);
    if weights_sha != w.sha256 {
        // The fast path hashes the section once; only on failure do the
        // per-weight checksums name the damaged tensors.
        let damaged: Vec<&str> = entries
            .iter()
            .filter(|(e, _, _, r)| {
                e.sha256
                    .as_deref()
                    .is_some_and(|s| s != sha256_hex(&data[r.clone()]))
            })
            .map(|(e, ..)| e.name.as_str())
            .collect();
        let mut message = corrupted(WEIGHTS_SECTION, &w.sha256, &weights_sha);
        if !damaged.is_empty() {
            message.push_str(&format!(" (damaged weights: {})", damaged.join(", ")));
        }
        return Err(message);
    }
    if let Some(a) = &manifest.assets {
        let assets_sha = sha256_hex(&data[last_section.1.clone()]);
        if assets_sha != a.sha256 {
            let damaged: Vec<&str> = assets
                .iter()
                .filter(|(f, r)| f.sha256 != sha256_hex(&data[r.clone()]))
                .map(|(f, _)| f.name.as_str())
                .collect();
            let mut message = corrupted(ASSETS_SECTION, &a.sha256, &assets_sha);
            if !damaged.is_empty() {
                message.push_str(&format!(" (damaged assets: {})", damaged.join(", ")));
            }
            return Err(message);
        }
    }

    // The graph, with the weights as views into the mapping.
    let mut weights = BTreeMap::new();
    for (e, dtype, dims, range) in entries {
        let bytes = TensorBytes::Mapped {
            map: Arc::clone(map),
            offset: range.start,
            len: range.len(),
        };
        let tensor = Tensor::from_bytes(dtype, dims, bytes)
            .map_err(|err| format!("weight `{}`: {err}", e.name))?;
        if weights.insert(e.name.clone(), tensor).is_some() {
            return Err(format!("the weights table lists `{}` twice", e.name));
        }
    }
    let text = std::str::from_utf8(graph_bytes)
        .map_err(|err| format!("section `{GRAPH_SECTION}` is not UTF-8 text: {err}"))?;
    let graph = text::parse(text, &weights)
        .map_err(|err| format!("section `{GRAPH_SECTION}` does not parse: {err}"))?;
    // A table entry the text never names would be dead weight at best and a
    // writer bug at worst; refuse it rather than guess.
    let used = graph
        .constants
        .values()
        .filter(|t| t.storage().is_mapped())
        .count();
    if used != weights.len() {
        let unused: Vec<&str> = weights
            .keys()
            .filter(|name| {
                graph
                    .find_value(name)
                    .and_then(|id| graph.constant(id))
                    .is_none_or(|t| !t.storage().is_mapped())
            })
            .map(String::as_str)
            .collect();
        return Err(format!(
            "the weights table lists weights the graph does not use: {}",
            unused.join(", ")
        ));
    }
    let assets = assets
        .into_iter()
        .map(|(f, r)| (f.name.clone(), r))
        .collect();
    Ok(Contents {
        manifest,
        graph,
        assets,
    })
}
