//! The bundle format (version 2): fixed header constants and the manifest
//! types.
//!
//! These types are shared by the reader (this crate) and the writer
//! (`kiln_targets::bundle`), so both ends agree on one definition. The
//! byte-level layout is specified in `docs/bundle.md`; this module is its
//! executable half.
//!
//! Every struct serializes its fields in declaration order and every map is a
//! `BTreeMap`, so the manifest JSON of a given graph and option set is always
//! the same bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The eight bytes every bundle starts with.
pub const MAGIC: [u8; 8] = *b"KILNBNDL";

/// The format version `kiln_targets` writes and the newest this crate reads.
///
/// Version 2 added the optional assets section; see `docs/bundle.md`.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format version this crate still reads. Version 1 files are
/// version 2 files without an assets section.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Alignment, in bytes from the start of the file, of every section and of
/// every weight.
///
/// 64 covers the widest SIMD loads (AVX-512) and common cache lines, and the
/// mapping itself is page-aligned, so a weight's address in memory is as
/// aligned as its offset in the file.
pub const ALIGNMENT: u64 = 64;

/// Byte offset of the format version (a little-endian `u32`).
pub const VERSION_OFFSET: usize = 8;

/// Byte offset of the manifest length (a little-endian `u64`).
pub const MANIFEST_LEN_OFFSET: usize = 12;

/// Byte offset of the manifest's SHA-256 (32 raw bytes).
pub const MANIFEST_SHA256_OFFSET: usize = 20;

/// Length of the fixed header; the manifest JSON starts right after it.
pub const HEADER_LEN: usize = 52;

/// Name of the graph section in manifests and error messages.
pub const GRAPH_SECTION: &str = "graph";

/// Name of the weights section in manifests and error messages.
pub const WEIGHTS_SECTION: &str = "weights";

/// Name of the assets section in manifests and error messages.
pub const ASSETS_SECTION: &str = "assets";

/// The JSON manifest: what the bundle is, where it came from, and where its
/// sections lie.
///
/// Readers ignore fields they do not know, so later writers may add optional
/// fields; a change of meaning or layout bumps [`FORMAT_VERSION`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_VERSION`]; repeats the header so the JSON stands alone.
    pub format_version: u32,
    /// Version of the kiln that wrote the bundle.
    pub kiln_version: String,
    /// Target the graph was compiled for (e.g. `cpu`).
    pub target: String,
    /// The model the bundle was compiled from.
    pub source: SourceInfo,
    /// Free-form compiler options and statistics (pipeline, passes run, ...).
    pub options: BTreeMap<String, serde_json::Value>,
    /// A summary of the graph, for tools that show a bundle without loading it.
    pub summary: GraphSummary,
    /// The section holding the graph's text form.
    pub graph: SectionRef,
    /// The section holding the external weights, and their table.
    pub weights: WeightsSection,
    /// The section holding the named files that travel with the model
    /// (`tokenizer.json`, `config.json`, ...); absent when there are none,
    /// and always absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<AssetsSection>,
}

/// Where a bundle's graph came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// File name of the source model, without its directory: full paths
    /// differ between machines and would break reproducible builds.
    pub name: String,
    /// SHA-256 of the source file, lowercase hex.
    pub sha256: String,
}

/// What the graph looks like from outside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphSummary {
    /// Graph name.
    pub name: String,
    /// Graph inputs, in order.
    pub inputs: Vec<ValueSummary>,
    /// Graph outputs, in order.
    pub outputs: Vec<ValueSummary>,
    /// Number of nodes.
    pub node_count: u64,
    /// Number of constants (inline and external).
    pub constant_count: u64,
    /// Total number of constant elements (parameters).
    pub parameter_count: u64,
    /// Node count per op name.
    pub op_histogram: BTreeMap<String, u64>,
}

/// A graph input or output, typed in the text form's notation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueSummary {
    /// Value name.
    pub name: String,
    /// Element type (`f32`, `i64`, ...).
    pub dtype: String,
    /// Shape, e.g. `[batch,3,224,224]`.
    pub shape: String,
}

/// A byte range of the file with its checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionRef {
    /// Offset from the start of the file; a multiple of [`ALIGNMENT`].
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// SHA-256 of the range, lowercase hex.
    pub sha256: String,
}

/// The weights section: one byte range holding every external weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsSection {
    /// Offset from the start of the file; a multiple of [`ALIGNMENT`].
    pub offset: u64,
    /// Length in bytes, from the first weight to the end of the last,
    /// alignment padding included.
    pub length: u64,
    /// SHA-256 of the whole range (padding included), lowercase hex; the
    /// reader checks it on open.
    pub sha256: String,
    /// The weights, sorted by name, laid out in this order.
    pub tensors: Vec<WeightEntry>,
}

/// One external weight: a constant the graph text writes as `weight`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightEntry {
    /// Name of the constant value in the graph.
    pub name: String,
    /// Element type (`f32`, `i64`, ...).
    pub dtype: String,
    /// Dimensions.
    pub dims: Vec<u64>,
    /// Offset from the start of the file; a multiple of [`ALIGNMENT`].
    pub offset: u64,
    /// Length in bytes: element count × element size.
    pub length: u64,
    /// SHA-256 of the tensor's bytes, lowercase hex. Lets tools compare
    /// bundles weight by weight, and lets the reader name the damaged weight
    /// once the section checksum has failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The assets section: one byte range holding every asset, laid out like the
/// weights section (sorted by name, each 64-byte aligned, zeros between).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetsSection {
    /// Offset from the start of the file; a multiple of [`ALIGNMENT`], the
    /// first one at or after the end of the weights section.
    pub offset: u64,
    /// Length in bytes, from the first asset to the end of the last,
    /// alignment padding included. The file ends where the section ends.
    pub length: u64,
    /// SHA-256 of the whole range (padding included), lowercase hex; the
    /// reader checks it on open.
    pub sha256: String,
    /// The assets, sorted by name, laid out in this order.
    pub files: Vec<AssetEntry>,
}

/// One asset: a named file stored verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetEntry {
    /// Name of the file, a relative path with `/` separators (see
    /// [`check_asset_name`]).
    pub name: String,
    /// Offset from the start of the file; a multiple of [`ALIGNMENT`].
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// SHA-256 of the asset's bytes, lowercase hex; names the damaged asset
    /// once the section checksum has failed.
    pub sha256: String,
}

/// Checks that `name` can be an asset name: assets become files when a
/// bundle is unpacked, so a name must not be empty, hold a NUL byte, be an
/// absolute path (start with `/`) or climb out of the target directory
/// through a `..` component. The error says which rule the name breaks.
pub fn check_asset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an asset name must not be empty".to_string());
    }
    if name.contains('\0') {
        return Err(format!("asset name {name:?} contains a NUL byte"));
    }
    if name.starts_with('/') {
        return Err(format!(
            "asset name {name:?} starts with `/`; it must be a relative path"
        ));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(format!(
            "asset name {name:?} has a `..` component; it must stay inside the bundle's directory"
        ));
    }
    Ok(())
}

/// Rounds `n` up to the next multiple of [`ALIGNMENT`]; `None` on overflow.
pub fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGNMENT - 1)
        .map(|v| v / ALIGNMENT * ALIGNMENT)
}

/// Lowercase hex of a digest (or any bytes).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_and_hex() {
        assert_eq!(align_up(0), Some(0));
        assert_eq!(align_up(1), Some(64));
        assert_eq!(align_up(64), Some(64));
        assert_eq!(align_up(u64::MAX), None);
        assert_eq!(to_hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn asset_names() {
        for good in [
            "tokenizer.json",
            "1_Pooling/config.json",
            "a/.../b",
            "..x",
            "x..",
        ] {
            assert!(check_asset_name(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("a\0b", "NUL"),
            ("/etc/passwd", "starts with `/`"),
            ("..", "`..`"),
            ("../x", "`..`"),
            ("a/../b", "`..`"),
            ("a/..", "`..`"),
        ] {
            let e = check_asset_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
