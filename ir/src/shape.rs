//! Tensor shapes with fixed and symbolic dimensions.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One dimension of a shape.
///
/// Symbolic dimensions (`batch`, `seq`) let one bundle serve every sequence
/// length; the runtime binds them from the actual inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dim {
    /// A dimension known at compile time.
    Fixed(u64),
    /// A named dimension bound at run time; equal names are equal sizes.
    Sym(String),
    /// A dimension that shape inference could not determine.
    Unknown,
}

impl Dim {
    /// The value of a fixed dimension.
    pub fn fixed(&self) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        }
    }

    /// Resolves the dimension with the given symbol bindings.
    pub fn resolve(&self, bindings: &BTreeMap<String, u64>) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Sym(s) => bindings.get(s).copied(),
            Dim::Unknown => None,
        }
    }
}

impl From<u64> for Dim {
    fn from(n: u64) -> Self {
        Dim::Fixed(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// The shape of a tensor: its rank is always known, its dimensions may not be.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A shape whose dimensions are all fixed.
    pub fn fixed(dims: &[u64]) -> Self {
        Shape(dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    /// A scalar (rank 0) shape.
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dimensions as numbers when every one is fixed.
    pub fn as_fixed(&self) -> Option<Vec<u64>> {
        self.0.iter().map(Dim::fixed).collect()
    }

    /// The number of elements when every dimension is fixed.
    pub fn num_elements(&self) -> Option<u64> {
        self.as_fixed().map(|d| d.iter().product())
    }

    /// Resolves every dimension with the given symbol bindings.
    pub fn resolve(&self, bindings: &BTreeMap<String, u64>) -> Option<Vec<u64>> {
        self.0.iter().map(|d| d.resolve(bindings)).collect()
    }

    /// The symbols this shape mentions.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|d| match d {
            Dim::Sym(s) => Some(s.as_str()),
            _ => None,
        })
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The static type of a value: element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ValueType {
    /// Element type.
    pub dtype: crate::DType,
    /// Shape, possibly with symbolic or unknown dimensions.
    pub shape: Shape,
}

impl ValueType {
    /// Builds a value type.
    pub fn new(dtype: crate::DType, shape: Shape) -> Self {
        ValueType { dtype, shape }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}
