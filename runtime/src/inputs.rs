//! Checking a run's inputs against the graph, for every executor.

use crate::RuntimeError;
use kiln_ir::{Dim, Graph, Tensor};
use std::collections::BTreeMap;

/// Checks a run's inputs against `g`'s declared inputs: no unknown names,
/// every input present (a graph input that is also a constant may be left
/// out when `constants_optional`), dtypes and ranks as declared, fixed
/// dimensions equal, and each symbolic dimension bound to one size across
/// all inputs. Shared by the CPU and wgpu executors so both reject the same
/// inputs with the same messages.
pub(crate) fn check(
    g: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    constants_optional: bool,
) -> Result<(), RuntimeError> {
    let expected: Vec<&str> = g.inputs.iter().map(|&v| g.value(v).name.as_str()).collect();
    for name in inputs.keys() {
        if !expected.contains(&name.as_str()) {
            return Err(RuntimeError::Input {
                name: name.clone(),
                message: format!(
                    "the graph has no such input (expected: {})",
                    expected.join(", ")
                ),
            });
        }
    }
    let mut bound: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for &v in &g.inputs {
        let info = g.value(v);
        let name = info.name.as_str();
        let Some(t) = inputs.get(name) else {
            if constants_optional && g.constants.contains_key(&v) {
                continue;
            }
            return Err(RuntimeError::Input {
                name: name.to_string(),
                message: format!("missing (expected inputs: {})", expected.join(", ")),
            });
        };
        if t.dtype() != info.ty.dtype {
            return Err(RuntimeError::Input {
                name: name.to_string(),
                message: format!("dtype is {}, expected {}", t.dtype(), info.ty.dtype),
            });
        }
        if t.dims().len() != info.ty.shape.rank() {
            return Err(RuntimeError::Input {
                name: name.to_string(),
                message: format!(
                    "rank is {} (shape {:?}), expected {} ({})",
                    t.dims().len(),
                    t.dims(),
                    info.ty.shape.rank(),
                    info.ty.shape
                ),
            });
        }
        for (i, (d, &actual)) in info.ty.shape.0.iter().zip(t.dims()).enumerate() {
            match d {
                Dim::Fixed(f) if *f != actual as u64 => {
                    return Err(RuntimeError::Input {
                        name: name.to_string(),
                        message: format!(
                            "dimension {i} is {actual}, expected {f} (shape {})",
                            info.ty.shape
                        ),
                    });
                }
                Dim::Sym(s) => match bound.get(s.as_str()) {
                    Some(&(b, other)) if b != actual as u64 => {
                        return Err(RuntimeError::Input {
                            name: name.to_string(),
                            message: format!("dimension `{s}` is {b} in input `{other}` but {actual} in input `{name}`"),
                        });
                    }
                    Some(_) => {}
                    None => {
                        bound.insert(s.as_str(), (actual as u64, name));
                    }
                },
                _ => {}
            }
        }
    }
    Ok(())
}
