//! Writing Kiln bundles (format v1), the files the runtime loads.
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
    align_up, sha256_hex, to_hex, GraphSummary, Manifest, SectionRef, SourceInfo, ValueSummary,
    WeightEntry, WeightsSection, FORMAT_VERSION, HEADER_LEN, MAGIC,
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

/// What the manifest records beside the graph: target, source and options.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BundleInfo {
    /// Target the graph was compiled for (e.g. `cpu`).
    pub target: String,
    /// File name of the source model. A path is reduced to its last
    /// component when written, so a bundle never records where it was built.
    pub source_name: String,
    /// SHA-256 of the source file, lowercase hex (see [`sha256_file`]).
    pub source_sha256: String,
    /// Free-form compiler options and statistics (pipeline, passes run,
    /// stats). Use only values that do not vary between runs of the same
    /// compilation (no timings, thread counts or paths), or the bundle stops
    /// being reproducible.
    pub options: BTreeMap<String, serde_json::Value>,
}

impl BundleInfo {
    /// Info for a graph compiled from the model file at `source`: records its
    /// file name and hashes it. Options start empty.
    pub fn for_source(target: impl Into<String>, source: &Path) -> Result<Self, BundleWriteError> {
        Ok(BundleInfo {
            target: target.into(),
            source_name: file_name_of(source),
            source_sha256: sha256_file(source)?,
            options: BTreeMap::new(),
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

/// The last component of `path`, or the whole of it when it has none.
fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string_lossy().into_owned())
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

    // Weights in name order (the map's order), each at an aligned offset.
    let mut placed = Vec::with_capacity(weights.len());
    let mut rel_end = 0u64;
    for (name, tensor) in weights {
        let rel_offset = align_up(rel_end).ok_or_else(overflow)?;
        rel_end = rel_offset
            .checked_add(tensor.bytes().len() as u64)
            .ok_or_else(overflow)?;
        placed.push(Placed {
            name,
            tensor,
            rel_offset,
        });
    }
    let weights_len = rel_end;
    let weights_bytes: u64 = placed.iter().map(|p| p.tensor.bytes().len() as u64).sum();

    // Hash the weights section as it will be laid out, padding included, so
    // the manifest (written before the weights) can carry the checksums.
    let mut section_hasher = Sha256::new();
    let mut weight_hashes = Vec::with_capacity(placed.len());
    let mut pos = 0u64;
    for p in &placed {
        feed_zeros(&mut section_hasher, p.rel_offset - pos);
        section_hasher.update(p.tensor.bytes());
        weight_hashes.push(sha256_hex(p.tensor.bytes()));
        pos = p.rel_offset + p.tensor.bytes().len() as u64;
    }
    let weights_sha = to_hex(&section_hasher.finalize());

    // The manifest records absolute offsets, which depend on the manifest's
    // own length. Offsets only grow as the data start moves later, so the
    // manifest only grows too: iterate until it fits before the data start.
    let build = |data_start: u64| -> Option<Manifest> {
        let graph_offset = data_start;
        let weights_offset = align_up(graph_offset.checked_add(graph_text.len() as u64)?)?;
        weights_offset.checked_add(weights_len)?;
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
    )
    .map_err(write_err)?;
    // Sync before the rename so a crash cannot leave a renamed but empty file.
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;

    Ok(WriteReport {
        file_size,
        weight_count: placed.len(),
        weights_bytes,
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
