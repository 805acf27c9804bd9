//! Reading and writing named tensors as safetensors files.

use anyhow::{bail, Context, Result};
use kiln_ir::{DType, Tensor};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

fn to_ir(d: StDtype) -> Option<DType> {
    Some(match d {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F64 => DType::F64,
        StDtype::I64 => DType::I64,
        StDtype::I32 => DType::I32,
        StDtype::I16 => DType::I16,
        StDtype::I8 => DType::I8,
        StDtype::U64 => DType::U64,
        StDtype::U32 => DType::U32,
        StDtype::U16 => DType::U16,
        StDtype::U8 => DType::U8,
        StDtype::BOOL => DType::Bool,
        _ => return None,
    })
}

fn to_st(d: DType) -> Option<StDtype> {
    Some(match d {
        DType::F32 => StDtype::F32,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::F64 => StDtype::F64,
        DType::I64 => StDtype::I64,
        DType::I32 => StDtype::I32,
        DType::I16 => StDtype::I16,
        DType::I8 => StDtype::I8,
        DType::U64 => StDtype::U64,
        DType::U32 => StDtype::U32,
        DType::U16 => StDtype::U16,
        DType::U8 => StDtype::U8,
        DType::Bool => StDtype::BOOL,
        // safetensors has no packed weight type.
        DType::Quant(_) => return None,
    })
}

/// Reads every tensor of a safetensors file, by name.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let Some(dtype) = to_ir(view.dtype()) else {
            bail!(
                "{}: tensor `{name}` has dtype {:?}, which Kiln does not support",
                path.display(),
                view.dtype()
            );
        };
        let t = Tensor::from_raw(dtype, view.shape().to_vec(), view.data())
            .with_context(|| format!("{}: tensor `{name}`", path.display()))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Writes named tensors to a safetensors file (through a temporary file, so
/// a failure leaves nothing behind).
pub fn write(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, t)| {
            let dtype = to_st(t.dtype()).ok_or_else(|| {
                anyhow::anyhow!("tensor `{n}`: safetensors cannot hold {}", t.dtype())
            })?;
            TensorView::new(dtype, t.dims().to_vec(), t.bytes())
                .map(|v| (n.clone(), v))
                .map_err(|e| anyhow::anyhow!("tensor `{n}`: {e}"))
        })
        .collect::<Result<_>>()?;
    let data = safetensors::serialize(views, &None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut tmp, &data)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error))?;
    Ok(())
}
