//! Typed access to a node's attributes, with errors that name the node.
//!
//! Every lookup marks the attribute as used; after an op handler ran, the
//! importer rejects any attribute it did not look at. That way an attribute
//! added by a newer opset, or a legacy one we do not model, is an error
//! instead of being silently dropped with a changed meaning.

use crate::error::{ImportError, NodeRef};
use std::cell::RefCell;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::{AttributeProto, TensorProto};

/// The attributes of one node.
pub(crate) struct Attrs<'a> {
    list: &'a [AttributeProto],
    used: RefCell<Vec<bool>>,
    node: &'a NodeRef,
    file: &'a str,
}

impl<'a> Attrs<'a> {
    /// Wraps a node's attribute list.
    pub(crate) fn new(list: &'a [AttributeProto], node: &'a NodeRef, file: &'a str) -> Self {
        Attrs {
            list,
            used: RefCell::new(vec![false; list.len()]),
            node,
            file,
        }
    }

    /// An attribute error for this node.
    pub(crate) fn err(&self, name: &str, problem: impl Into<String>) -> ImportError {
        ImportError::Attribute {
            file: self.file.to_string(),
            node: Box::new(self.node.clone()),
            attribute: name.to_string(),
            problem: problem.into(),
        }
    }

    /// The attribute named `name` of the expected type, marking it used.
    fn find(
        &self,
        name: &str,
        want: AttributeType,
    ) -> Result<Option<&'a AttributeProto>, ImportError> {
        let Some(i) = self.list.iter().position(|a| a.name == name) else {
            return Ok(None);
        };
        self.used.borrow_mut()[i] = true;
        let a = &self.list[i];
        if !a.ref_attr_name.is_empty() {
            return Err(self.err(name, "refers to a function attribute outside a function"));
        }
        // IR version 1 models leave the type unset; trust the field then.
        if a.r#type != AttributeType::Undefined as i32 && a.r#type != want as i32 {
            let got = AttributeType::try_from(a.r#type)
                .map(|t| t.as_str_name().to_string())
                .unwrap_or_else(|_| format!("type code {}", a.r#type));
            return Err(self.err(
                name,
                format!("expected {}, found {got}", want.as_str_name()),
            ));
        }
        Ok(Some(a))
    }

    /// True when the node carries the attribute (does not mark it used).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.list.iter().any(|a| a.name == name)
    }

    /// Marks attributes as understood without reading them (they do not
    /// change inference results, e.g. `momentum` or `stash_type`).
    pub(crate) fn ignore(&self, names: &[&str]) {
        let mut used = self.used.borrow_mut();
        for (i, a) in self.list.iter().enumerate() {
            if names.contains(&a.name.as_str()) {
                used[i] = true;
            }
        }
    }

    /// The first attribute no handler looked at.
    pub(crate) fn first_unused(&self) -> Option<&'a str> {
        let used = self.used.borrow();
        self.list
            .iter()
            .zip(used.iter())
            .find(|(_, &u)| !u)
            .map(|(a, _)| a.name.as_str())
    }

    /// An optional int attribute.
    pub(crate) fn int(&self, name: &str) -> Result<Option<i64>, ImportError> {
        Ok(self.find(name, AttributeType::Int)?.map(|a| a.i))
    }

    /// An int attribute with a default.
    pub(crate) fn int_or(&self, name: &str, default: i64) -> Result<i64, ImportError> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// A required int attribute.
    pub(crate) fn req_int(&self, name: &str) -> Result<i64, ImportError> {
        self.int(name)?
            .ok_or_else(|| self.err(name, "required but missing"))
    }

    /// A 0/1 flag with a default; other values are rejected.
    pub(crate) fn flag(&self, name: &str, default: bool) -> Result<bool, ImportError> {
        match self.int(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => Err(self.err(name, format!("expected 0 or 1, found {v}"))),
        }
    }

    /// A non-negative int attribute with a default.
    pub(crate) fn uint_or(&self, name: &str, default: u64) -> Result<u64, ImportError> {
        match self.int(name)? {
            None => Ok(default),
            Some(v) => u64::try_from(v)
                .map_err(|_| self.err(name, format!("expected a non-negative value, found {v}"))),
        }
    }

    /// An optional float attribute.
    pub(crate) fn float(&self, name: &str) -> Result<Option<f32>, ImportError> {
        Ok(self.find(name, AttributeType::Float)?.map(|a| a.f))
    }

    /// A float attribute with a default.
    pub(crate) fn float_or(&self, name: &str, default: f32) -> Result<f32, ImportError> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    /// An optional list of ints.
    pub(crate) fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, ImportError> {
        Ok(self
            .find(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    /// A list of non-negative ints; empty when absent.
    pub(crate) fn uints(&self, name: &str) -> Result<Vec<u64>, ImportError> {
        let Some(v) = self.ints(name)? else {
            return Ok(Vec::new());
        };
        v.iter()
            .map(|&x| {
                u64::try_from(x).map_err(|_| {
                    self.err(name, format!("expected non-negative values, found {v:?}"))
                })
            })
            .collect()
    }

    /// An optional list of floats.
    pub(crate) fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, ImportError> {
        Ok(self
            .find(name, AttributeType::Floats)?
            .map(|a| a.floats.clone()))
    }

    /// An optional UTF-8 string attribute.
    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, ImportError> {
        match self.find(name, AttributeType::String)? {
            None => Ok(None),
            Some(a) => String::from_utf8(a.s.clone())
                .map(Some)
                .map_err(|_| self.err(name, "not valid UTF-8")),
        }
    }

    /// A string attribute with a default.
    pub(crate) fn string_or(&self, name: &str, default: &str) -> Result<String, ImportError> {
        Ok(self.string(name)?.unwrap_or_else(|| default.to_string()))
    }

    /// An optional tensor attribute.
    pub(crate) fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>, ImportError> {
        Ok(self
            .find(name, AttributeType::Tensor)?
            .and_then(|a| a.t.as_ref()))
    }

    /// An optional sparse tensor attribute.
    pub(crate) fn sparse_tensor(
        &self,
        name: &str,
    ) -> Result<Option<&'a tract_onnx::pb::SparseTensorProto>, ImportError> {
        Ok(self
            .find(name, AttributeType::SparseTensor)?
            .and_then(|a| a.sparse_tensor.as_ref()))
    }

    /// Parses a string attribute through `parse`, naming the accepted values on failure.
    pub(crate) fn choice<T>(
        &self,
        name: &str,
        default: &str,
        choices: &[(&str, T)],
    ) -> Result<T, ImportError>
    where
        T: Copy,
    {
        let s = self.string_or(name, default)?;
        choices
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&s))
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(k, _)| *k).collect();
                self.err(
                    name,
                    format!("unsupported value '{s}' (supported: {})", names.join(", ")),
                )
            })
    }
}
