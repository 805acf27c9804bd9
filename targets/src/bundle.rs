//! Writing Kiln bundles (format version 2), the files the runtime loads.
//!
//! The layout is specified in `docs/bundle.md`; its types and constants live
//! in `kiln_runtime::bundle::format`, so the reader and this writer cannot
//! drift apart. The writer promises:
//!
//! - **Reproducible output.** The same graph and [`BundleInfo`] give the same
//!   bytes: no timestamps, no absolute paths, sorted maps, a fixed field
//!   order and a single-threaded layout.
//! - **Atomic replacement.** The bundle is written to a temporary file in the
//!   destination's directory and renamed over the destination only once it
//!   is complete and synced. On any error the destination is untouched and
//!   the temporary file is removed.
//! - **Loadable output.** The graph is checked to survive its text form
//!   before anything is written, so a bundle the writer accepts is one the
//!   runtime can read back.

use kiln_ir::{text, Graph, Tensor};
use kiln_runtime::bundle::format::{
    align_up, check_asset_name, sha256_hex, to_hex, AssetEntry, AssetsSection, GraphSummary,
    Manifest, SectionRef, SourceInfo, ValueSummary, WeightEntry, WeightsSection, FORMAT_VERSION,
    HEADER_LEN, MAGIC,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The version of kiln recorded in every manifest.
pub const KILN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Size of the buffers used to stream files, large enough that syscalls do
/// not dominate when writing or hashing hundreds of megabytes.
const IO_BUFFER: usize = 1 << 20;

/// What the bundle records beside the graph: target, source, options and
/// assets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BundleInfo {
    /// Target the graph was compiled for (e.g. `cpu`).
    pub target: String,
    /// File name of the source model. A path is reduced to its last
    /// component when written, so a bundle never records where it was built.
    pub source_name: String,
    /// SHA-256 of the source file or folder, lowercase hex (see
    /// [`sha256_source`]).
    pub source_sha256: String,
    /// Free-form compiler options and statistics (pipeline, passes run,
    /// stats). Use only values that do not vary between runs of the same
    /// compilation (no timings, thread counts or paths), or the bundle stops
    /// being reproducible.
    pub options: BTreeMap<String, serde_json::Value>,
    /// Named files stored verbatim beside the graph (`tokenizer.json`,
    /// `config.json`, ...), keyed by a relative `/`-separated name that
    /// [`check_asset_name`] accepts. Empty means no assets section.
    pub assets: BTreeMap<String, Vec<u8>>,
}

impl BundleInfo {
    /// Info for a graph compiled from the model at `source`, a file or a
    /// model folder: records its name and hashes it with [`sha256_source`].
    /// Options and assets start empty.
    pub fn for_source(target: impl Into<String>, source: &Path) -> Result<Self, BundleWriteError> {
        Ok(BundleInfo {
            target: target.into(),
            source_name: file_name_of(source),
            source_sha256: sha256_source(source)?,
            options: BTreeMap::new(),
            assets: BTreeMap::new(),
        })
    }
}

/// What [`write_bundle`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteReport {
    /// Size of the bundle file in bytes.
    pub file_size: u64,
    /// Number of external weights.
    pub weight_count: usize,
    /// Bytes of weight data, alignment padding excluded.
    pub weights_bytes: u64,
    /// Bytes of asset data, alignment padding excluded.
    pub assets_bytes: u64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
}

/// Why a bundle could not be written (or a source file hashed).
#[derive(Debug, thiserror::Error)]
pub enum BundleWriteError {
    /// Creating, writing, syncing or renaming the bundle failed.
    #[error("cannot write bundle {}: {source}", path.display())]
    Write {
        /// The destination bundle path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading a file to hash it failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The graph or the destination cannot make a valid bundle.
    #[error("cannot write bundle {}: {message}", path.display())]
    Invalid {
        /// The destination bundle path.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// SHA-256 of the file at `path`, lowercase hex, read in a streaming way so
/// large models are not loaded into memory.
pub fn sha256_file(path: &Path) -> Result<String, BundleWriteError> {
    let err = |source| BundleWriteError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; IO_BUFFER];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(e)),
        }
    }
    Ok(to_hex(&hasher.finalize()))
}

/// SHA-256 identifying the model at `path`, lowercase hex.
///
/// For a file it is the file's SHA-256 ([`sha256_file`]). For a folder (a
/// Hugging Face model directory) it is the SHA-256 of a canonical listing in
/// `sha256sum` style: one line `"<sha256-hex>  <relative/path>\n"` per file
/// under the folder, recursively, sorted by relative path (`/`-separated,
/// compared byte by byte). Entries whose name starts with `.` (and
/// everything under such folders) are skipped, as are entries that are
/// neither files nor folders. A symbolic link to a file counts as that file,
/// since Hugging Face caches link snapshot files to blobs; links to folders
/// are not followed, which rules out cycles. The hash changes exactly when
/// a file's content or name changes, never with timestamps or permissions.
pub fn sha256_source(path: &Path) -> Result<String, BundleWriteError> {
    let meta = std::fs::metadata(path).map_err(read_error(path))?;
    if !meta.is_dir() {
        return sha256_file(path);
    }
    let mut files = Vec::new();
    collect_files(path, String::new(), &mut files)?;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut listing = Sha256::new();
    for (rel, full) in &files {
        let sha = sha256_file(full)?;
        listing.update(format!("{sha}  {rel}\n").as_bytes());
    }
    Ok(to_hex(&listing.finalize()))
}

/// Appends `(relative path, full path)` for every file under `dir`,
/// following the rules of [`sha256_source`]; `prefix` is `dir`'s relative
/// path with a trailing `/`, or empty at the top.
fn collect_files(
    dir: &Path,
    prefix: String,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), BundleWriteError> {
    let err = read_error;
    for entry in std::fs::read_dir(dir).map_err(err(dir))? {
        let entry = entry.map_err(err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let full = entry.path();
        let rel = format!("{prefix}{name}");
        // `file_type` does not follow links; `metadata` on the path does.
        let kind = entry.file_type().map_err(err(&full))?;
        if kind.is_dir() {
            collect_files(&full, format!("{rel}/"), out)?;
        } else if kind.is_file() {
            out.push((rel, full));
        } else if kind.is_symlink() {
            // A dangling link is skipped like any other non-file entry.
            if std::fs::metadata(&full).is_ok_and(|m| m.is_file()) {
                out.push((rel, full));
            }
        }
    }
    Ok(())
}

/// The last component of `path`, or the whole of it when it has none.
fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string_lossy().into_owned())
}

/// Turns an I/O error on `path` into [`BundleWriteError::Read`].
fn read_error(path: &Path) -> impl FnOnce(io::Error) -> BundleWriteError {
    let path = path.to_path_buf();
    move |source| BundleWriteError::Read { path, source }
}

/// One asset, placed.
struct PlacedAsset<'a> {
    name: &'a str,
    bytes: &'a [u8],
    /// Offset from the start of the assets section.
    rel_offset: u64,
}

/// Lays out byte strings one after another, each at a multiple of
/// [`ALIGNMENT`](kiln_runtime::bundle::ALIGNMENT) relative to the section
/// start; returns each start and the section's length, or `None` on overflow.
fn layout<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Option<(Vec<u64>, u64)> {
    let mut starts = Vec::new();
    let mut end = 0u64;
    for bytes in items {
        let start = align_up(end)?;
        end = start.checked_add(bytes.len() as u64)?;
        starts.push(start);
    }
    Some((starts, end))
}

/// SHA-256 of a section as [`layout`] places `items` (zeros between them),
/// lowercase hex, so the manifest can carry it before the bytes are written.
fn section_sha256<'a>(items: impl IntoIterator<Item = (u64, &'a [u8])>) -> String {
    let mut hasher = Sha256::new();
    let mut pos = 0u64;
    for (rel_offset, bytes) in items {
        feed_zeros(&mut hasher, rel_offset - pos);
        hasher.update(bytes);
        pos = rel_offset + bytes.len() as u64;
    }
    to_hex(&hasher.finalize())
}

/// One external weight, placed.
struct Placed {
    name: String,
    tensor: Tensor,
    /// Offset from the start of the weights section.
    rel_offset: u64,
}

/// Writes `graph` as a bundle at `path`, atomically.
///
/// Constants with more than [`text::INLINE_LIMIT`] elements go to the
/// weights section, 64-byte aligned; the rest stay inline in the graph text.
pub fn write_bundle(
    path: &Path,
    graph: &Graph,
    info: &BundleInfo,
) -> Result<WriteReport, BundleWriteError> {
    let invalid = |message: String| BundleWriteError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let overflow = || invalid("the bundle would be larger than 2^64 bytes".to_string());

    let graph_text = text::print(graph);
    let weights = text::external_weights(graph);
    // Refuse now what the reader would refuse later: a graph whose text form
    // does not parse back (e.g. a constant whose data does not match its type).
    text::parse(&graph_text, &weights)
        .map_err(|e| invalid(format!("the graph does not survive its text form: {e}")))?;

    // Asset names become file names when a bundle is unpacked; refuse now
    // what the reader would refuse later.
    for name in info.assets.keys() {
        check_asset_name(name).map_err(invalid)?;
    }

    // Weights in name order (the map's order), each at an aligned offset.
    let (starts, weights_len) = layout(weights.values().map(|t| t.bytes())).ok_or_else(overflow)?;
    let placed: Vec<Placed> = weights
        .into_iter()
        .zip(starts)
        .map(|((name, tensor), rel_offset)| Placed {
            name,
            tensor,
            rel_offset,
        })
        .collect();
    let weights_bytes: u64 = placed.iter().map(|p| p.tensor.bytes().len() as u64).sum();
    // Hash the weights section as it will be laid out, padding included, so
    // the manifest (written before the weights) can carry the checksums.
    let weight_hashes: Vec<String> = placed
        .iter()
        .map(|p| sha256_hex(p.tensor.bytes()))
        .collect();
    let weights_sha = section_sha256(placed.iter().map(|p| (p.rel_offset, p.tensor.bytes())));

    // Assets likewise, in name order, after the weights.
    let (starts, assets_len) =
        layout(info.assets.values().map(Vec::as_slice)).ok_or_else(overflow)?;
    let placed_assets: Vec<PlacedAsset> = info
        .assets
        .iter()
        .zip(starts)
        .map(|((name, bytes), rel_offset)| PlacedAsset {
            name,
            bytes,
            rel_offset,
        })
        .collect();
    let assets_bytes: u64 = placed_assets.iter().map(|a| a.bytes.len() as u64).sum();
    let asset_hashes: Vec<String> = placed_assets.iter().map(|a| sha256_hex(a.bytes)).collect();
    let assets_sha = section_sha256(placed_assets.iter().map(|a| (a.rel_offset, a.bytes)));

    // The manifest records absolute offsets, which depend on the manifest's
    // own length. Offsets only grow as the data start moves later, so the
    // manifest only grows too: iterate until it fits before the data start.
    let build = |data_start: u64| -> Option<Manifest> {
        let graph_offset = data_start;
        let weights_offset = align_up(graph_offset.checked_add(graph_text.len() as u64)?)?;
        let assets_offset = align_up(weights_offset.checked_add(weights_len)?)?;
        assets_offset.checked_add(assets_len)?;
        let tensors = placed
            .iter()
            .zip(&weight_hashes)
            .map(|(p, sha)| WeightEntry {
                name: p.name.clone(),
                dtype: p.tensor.dtype().name().to_string(),
                dims: p.tensor.dims().iter().map(|&d| d as u64).collect(),
                offset: weights_offset + p.rel_offset,
                length: p.tensor.bytes().len() as u64,
                sha256: Some(sha.clone()),
            })
            .collect();
        Some(Manifest {
            format_version: FORMAT_VERSION,
            kiln_version: KILN_VERSION.to_string(),
            target: info.target.clone(),
            source: SourceInfo {
                name: file_name_of(Path::new(&info.source_name)),
                sha256: info.source_sha256.clone(),
            },
            options: info.options.clone(),
            summary: summarize(graph),
            graph: SectionRef {
                offset: graph_offset,
                length: graph_text.len() as u64,
                sha256: sha256_hex(graph_text.as_bytes()),
            },
            weights: WeightsSection {
                offset: weights_offset,
                length: weights_len,
                sha256: weights_sha.clone(),
                tensors,
            },
            // No assets, no section: the layout is then exactly version 1's.
            assets: (!placed_assets.is_empty()).then(|| AssetsSection {
                offset: assets_offset,
                length: assets_len,
                sha256: assets_sha.clone(),
                files: placed_assets
                    .iter()
                    .zip(&asset_hashes)
                    .map(|(a, sha)| AssetEntry {
                        name: a.name.to_string(),
                        offset: assets_offset + a.rel_offset,
                        length: a.bytes.len() as u64,
                        sha256: sha.clone(),
                    })
                    .collect(),
            }),
        })
    };
    let serialize = |m: &Manifest| {
        serde_json::to_vec_pretty(m)
            .map_err(|e| invalid(format!("cannot serialize the manifest: {e}")))
    };
    let mut data_start = align_up(HEADER_LEN as u64).ok_or_else(overflow)?;
    let (manifest, manifest_json) = loop {
        let manifest = build(data_start).ok_or_else(overflow)?;
        let json = serialize(&manifest)?;
        let needed = align_up(HEADER_LEN as u64 + json.len() as u64).ok_or_else(overflow)?;
        if needed <= data_start {
            break (manifest, json);
        }
        data_start = needed;
    };

    // Write to a temporary file beside the destination, then rename: a
    // reader never sees a half-written bundle, and a failure leaves nothing.
    let file_name = path
        .file_name()
        .ok_or_else(|| invalid("the destination is not a file path".to_string()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let write_err = |source| BundleWriteError::Write {
        path: path.to_path_buf(),
        source,
    };
    // `.gitignore` ignores `*.kiln.tmp*`, so an interrupted build's leftover
    // never shows up as a change.
    let prefix = format!(".{}.kiln.tmp", file_name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    #[cfg(unix)]
    {
        // tempfile defaults to 0600; a deployable file gets the usual
        // 0666 & !umask of any newly created file.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder.tempfile_in(dir).map_err(write_err)?;

    let (file_size, sha256) = write_contents(
        tmp.as_file(),
        &manifest,
        &manifest_json,
        &graph_text,
        &placed,
        &placed_assets,
    )
    .map_err(write_err)?;
    // Sync before the rename so a crash cannot leave a renamed but empty file.
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;

    Ok(WriteReport {
        file_size,
        weight_count: placed.len(),
        weights_bytes,
        assets_bytes,
        sha256,
    })
}

/// Writes the whole bundle to `file` as `manifest` lays it out; returns the
/// number of bytes written and their SHA-256.
fn write_contents(
    file: &File,
    manifest: &Manifest,
    manifest_json: &[u8],
    graph_text: &str,
    placed: &[Placed],
    placed_assets: &[PlacedAsset],
) -> io::Result<(u64, String)> {
    let mut out = HashingWriter {
        inner: BufWriter::with_capacity(IO_BUFFER, file),
        hasher: Sha256::new(),
        written: 0,
    };
    out.write_all(&MAGIC)?;
    out.write_all(&FORMAT_VERSION.to_le_bytes())?;
    out.write_all(&(manifest_json.len() as u64).to_le_bytes())?;
    out.write_all(&Sha256::digest(manifest_json))?;
    out.write_all(manifest_json)?;
    out.pad_to(manifest.graph.offset)?;
    out.write_all(graph_text.as_bytes())?;
    out.pad_to(manifest.weights.offset)?;
    for p in placed {
        out.pad_to(manifest.weights.offset + p.rel_offset)?;
        out.write_all(p.tensor.bytes())?;
    }
    if let Some(a) = &manifest.assets {
        for p in placed_assets {
            out.pad_to(a.offset + p.rel_offset)?;
            out.write_all(p.bytes)?;
        }
    }
    out.inner.flush()?;
    Ok((out.written, to_hex(&out.hasher.finalize())))
}

/// Feeds `n` zero bytes (alignment padding) to a hasher.
fn feed_zeros(hasher: &mut Sha256, mut n: u64) {
    const ZEROS: [u8; 64] = [0; 64];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// A writer that hashes and counts what passes through it, so the file's
/// checksum comes for free instead of from a second read.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Writes zero bytes up to absolute offset `to`.
    fn pad_to(&mut self, to: u64) -> io::Result<()> {
        const ZEROS: [u8; 64] = [0; 64];
        while self.written < to {
            let k = (to - self.written).min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..k])?;
        }
        Ok(())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The manifest's view of the graph.
fn summarize(graph: &Graph) -> GraphSummary {
    let value = |id| {
        let v = graph.value(id);
        ValueSummary {
            name: v.name.clone(),
            dtype: v.ty.dtype.name().to_string(),
            shape: v.ty.shape.to_string(),
        }
    };
    GraphSummary {
        name: graph.name.clone(),
        inputs: graph.inputs.iter().map(|&id| value(id)).collect(),
        outputs: graph.outputs.iter().map(|&id| value(id)).collect(),
        node_count: graph.nodes.len() as u64,
        constant_count: graph.constants.len() as u64,
        parameter_count: graph.constant_elements(),
        op_histogram: graph
            .op_histogram()
            .into_iter()
            .map(|(op, n)| (op.to_string(), n as u64))
            .collect(),
    }
}
