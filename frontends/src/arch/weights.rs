//! Where an architecture template gets its weights from.

use super::builder::GraphBuilder;
use super::Layout;
use crate::ImportError;
use kiln_ir::{Tensor, ValueId};

/// A source of named weights, in Hugging Face naming, delivered as f32.
///
/// The safetensors folder loader and the GGUF importer both implement it, so
/// one template builds the graph whatever file the weights came from.
pub trait WeightSource {
    /// The weight `name`, converted to f32 with its source dims
    /// (row-major, outermost first). Missing names are an error naming the
    /// file.
    fn get(&mut self, name: &str) -> Result<Tensor, ImportError>;
    /// Whether the source has `name`.
    fn contains(&self, name: &str) -> bool;
    /// The file (or folder) the weights come from, for messages.
    fn origin(&self) -> String;
}

/// Transposes a 2-D f32 tensor: `[rows, cols]` → `[cols, rows]`.
///
/// Linear layers store `[out, in]`; Kiln keeps them input-major so MatMul
/// reads them directly.
pub fn transpose_2d(t: &Tensor, name: &str, origin: &str) -> Result<Tensor, ImportError> {
    let bad = |problem: String| ImportError::BadTensor {
        file: origin.to_string(),
        tensor: name.to_string(),
        problem,
    };
    let [rows, cols] = *t.dims() else {
        return Err(bad(format!(
            "expected a 2-D weight, found dims {:?}",
            t.dims()
        )));
    };
    let src = t
        .to_vec::<f32>()
        .map_err(|e| bad(format!("expected f32 data: {e}")))?;
    let mut dst = vec![0f32; src.len()];
    // Blocked so both sides stay in cache for big matrices.
    const B: usize = 64;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
    Tensor::from_vec(vec![cols, rows], dst).map_err(|e| bad(e.to_string()))
}

/// Reads weight `name` from `src` and adds it to the graph in `layout`.
pub fn load_weight(
    b: &mut GraphBuilder,
    src: &mut dyn WeightSource,
    name: &str,
    layout: Layout,
) -> Result<ValueId, ImportError> {
    let t = src.get(name)?;
    let t = match layout {
        Layout::AsIs => t,
        Layout::Transposed => transpose_2d(&t, name, &src.origin())?,
    };
    Ok(b.constant(name, t))
}
