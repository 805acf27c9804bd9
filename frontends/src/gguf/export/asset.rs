//! The GGUF metadata of an imported file, kept as a JSON asset
//! ([`crate::gguf_llama::GGUF_METADATA_ASSET`]) so that an export writes
//! back what the file had.
//!
//! The asset is a JSON list of entries `{"key", "type", "value"}` with the
//! stored GGUF type (`u32`, `f32`, `string`, `array` ...; arrays add
//! `"elem"`, their element type, and nested arrays are lists of entries
//! without keys). Finite floats are JSON numbers (an f32 goes through f64
//! exactly); NaN and infinities are the strings `"nan"`, `"inf"`, `"-inf"`.
//! `tokenizer.ggml.tokens` and `tokenizer.ggml.merges` are left out when the
//! `tokenizer.json` beside them reproduces them exactly (their entry then
//! says `"from": "tokenizer.json"`): they are the bulk of the metadata.

use super::vocab;
use crate::gguf::MetaValue;
use crate::ImportError;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Keys whose values may be carried by `tokenizer.json` instead.
pub(super) const FROM_TOKENIZER: [&str; 2] = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges"];

/// Marker value of an entry carried by `tokenizer.json`.
const TOKENIZER_JSON: &str = "tokenizer.json";

fn float_json(x: f64) -> Value {
    if x.is_nan() {
        json!("nan")
    } else if x.is_infinite() {
        json!(if x > 0.0 { "inf" } else { "-inf" })
    } else {
        json!(x)
    }
}

fn float_of(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => match s.as_str() {
            "nan" => Some(f64::NAN),
            "inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        other => other.as_f64(),
    }
}

/// A value's plain JSON (no type tag) for scalars and strings.
fn plain(v: &MetaValue) -> Value {
    match v {
        MetaValue::U8(x) => json!(x),
        MetaValue::I8(x) => json!(x),
        MetaValue::U16(x) => json!(x),
        MetaValue::I16(x) => json!(x),
        MetaValue::U32(x) => json!(x),
        MetaValue::I32(x) => json!(x),
        MetaValue::U64(x) => json!(x),
        MetaValue::I64(x) => json!(x),
        MetaValue::F32(x) => float_json(f64::from(*x)),
        MetaValue::F64(x) => float_json(*x),
        MetaValue::Bool(x) => json!(x),
        MetaValue::String(s) => json!(s),
        MetaValue::Array(_) => typed(v),
    }
}

/// A value as `{"type", "value"}` (arrays with `"elem"`).
fn typed(v: &MetaValue) -> Value {
    match v {
        MetaValue::Array(items) => {
            let elem = items.first().map_or("u8", MetaValue::type_name);
            json!({"type": "array", "elem": elem, "value": items.iter().map(plain).collect::<Vec<_>>()})
        }
        other => json!({"type": other.type_name(), "value": plain(other)}),
    }
}

/// Reads a value of type `ty` from its plain JSON.
fn from_plain(ty: &str, v: &Value) -> Option<MetaValue> {
    let uint = |max: u64| v.as_u64().filter(|&x| x <= max);
    let int = |min: i64, max: i64| v.as_i64().filter(|&x| (min..=max).contains(&x));
    Some(match ty {
        "u8" => MetaValue::U8(uint(u8::MAX.into())? as u8),
        "i8" => MetaValue::I8(int(i8::MIN.into(), i8::MAX.into())? as i8),
        "u16" => MetaValue::U16(uint(u16::MAX.into())? as u16),
        "i16" => MetaValue::I16(int(i16::MIN.into(), i16::MAX.into())? as i16),
        "u32" => MetaValue::U32(uint(u32::MAX.into())? as u32),
        "i32" => MetaValue::I32(int(i32::MIN.into(), i32::MAX.into())? as i32),
        "u64" => MetaValue::U64(v.as_u64()?),
        "i64" => MetaValue::I64(v.as_i64()?),
        "f32" => MetaValue::F32(float_of(v)? as f32),
        "f64" => MetaValue::F64(float_of(v)?),
        "bool" => MetaValue::Bool(v.as_bool()?),
        "string" => MetaValue::String(v.as_str()?.to_string()),
        "array" => return from_typed(v),
        _ => return None,
    })
}

/// Reads a `{"type", "value"}` object.
fn from_typed(v: &Value) -> Option<MetaValue> {
    let ty = v.get("type")?.as_str()?;
    let value = v.get("value")?;
    if ty != "array" {
        return from_plain(ty, value);
    }
    let elem = v.get("elem")?.as_str()?;
    value
        .as_array()?
        .iter()
        .map(|x| from_plain(elem, x))
        .collect::<Option<Vec<_>>>()
        .map(MetaValue::Array)
}

/// The asset for a GGUF file's metadata: every key, except the tokens and
/// merges that `tokenizer_json` (the tokenizer Kiln built from the file)
/// reproduces exactly. `origin` names the file in errors.
pub fn source_metadata_json(
    metadata: &BTreeMap<String, MetaValue>,
    tokenizer_json: &str,
    origin: &str,
) -> Result<String, ImportError> {
    let parsed: Value =
        serde_json::from_str(tokenizer_json).map_err(|e| ImportError::InvalidModel {
            file: origin.to_string(),
            message: format!("the tokenizer built from the file does not serialise: {e}"),
        })?;
    // When the pipeline cannot give them back, the arrays stay in the asset.
    let (tokens, merges) = vocab::tokens_and_merges(&parsed).unwrap_or_default();
    let same = |key: &str, list: &[String]| {
        metadata
            .get(key)
            .and_then(MetaValue::as_array)
            .is_some_and(|a| {
                a.len() == list.len() && a.iter().zip(list).all(|(x, y)| x.as_str() == Some(y))
            })
    };
    let mut entries = Vec::with_capacity(metadata.len());
    for (key, value) in metadata {
        let carried = match key.as_str() {
            "tokenizer.ggml.tokens" => same(key, &tokens),
            "tokenizer.ggml.merges" => merges.as_deref().is_some_and(|m| same(key, m)),
            _ => false,
        };
        let mut entry = if carried {
            json!({"from": TOKENIZER_JSON})
        } else {
            typed(value)
        };
        if let Value::Object(obj) = &mut entry {
            let mut with_key = Map::new();
            with_key.insert("key".into(), json!(key));
            with_key.extend(std::mem::take(obj));
            entry = Value::Object(with_key);
        }
        entries.push(entry);
    }
    Ok(Value::Array(entries).to_string())
}

/// One key of the asset: its value, or `None` when `tokenizer.json` carries it.
pub(super) type SourceEntry = (String, Option<MetaValue>);

/// Reads the asset written by [`source_metadata_json`].
pub(super) fn read(bytes: &[u8]) -> Result<Vec<SourceEntry>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let list = v.as_array().ok_or("expected a JSON list of entries")?;
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("entry {i} has no 'key'"))?;
            if e.get("from").and_then(Value::as_str) == Some(TOKENIZER_JSON) {
                if !FROM_TOKENIZER.contains(&key) {
                    return Err(format!("key '{key}' cannot come from tokenizer.json"));
                }
                return Ok((key.to_string(), None));
            }
            let value = from_typed(e).ok_or_else(|| {
                format!("the value of key '{key}' is not a typed GGUF value: {e}")
            })?;
            Ok((key.to_string(), Some(value)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_type_round_trips() {
        let values = [
            MetaValue::U8(255),
            MetaValue::I8(-128),
            MetaValue::U16(65535),
            MetaValue::I16(-32768),
            MetaValue::U32(u32::MAX),
            MetaValue::I32(i32::MIN),
            MetaValue::U64(u64::MAX),
            MetaValue::I64(i64::MIN),
            MetaValue::F32(1e-5),
            MetaValue::F32(f32::MIN_POSITIVE / 3.0),
            MetaValue::F32(f32::NEG_INFINITY),
            MetaValue::F64(0.1),
            MetaValue::F64(-0.0),
            MetaValue::Bool(true),
            MetaValue::String("é \"q\" \n".into()),
            MetaValue::Array(vec![MetaValue::I32(3), MetaValue::I32(-1)]),
            MetaValue::Array(vec![MetaValue::String("a b".into())]),
            MetaValue::Array(vec![MetaValue::F32(0.5), MetaValue::F32(f32::NAN)]),
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::U16(1)]),
                MetaValue::Array(vec![MetaValue::U16(2), MetaValue::U16(3)]),
            ]),
        ];
        let metadata: BTreeMap<String, MetaValue> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("k.{i:02}"), v.clone()))
            .collect();
        let text = source_metadata_json(&metadata, "{}", "test").unwrap();
        let back = read(text.as_bytes()).unwrap();
        assert_eq!(back.len(), values.len());
        for ((key, got), (want_key, want)) in back.iter().zip(&metadata) {
            assert_eq!(key, want_key);
            let got = got.as_ref().unwrap();
            // Compare float bits (NaN included) through the debug form.
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{key}");
            assert_eq!(got.type_name(), want.type_name(), "{key}");
        }
    }

    #[test]
    fn tokens_stay_out_only_when_tokenizer_json_has_them() {
        let strings = |s: &[&str]| {
            MetaValue::Array(s.iter().map(|x| MetaValue::String(x.to_string())).collect())
        };
        let tokenizer = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}}"#;
        let mut metadata = BTreeMap::new();
        metadata.insert(
            "tokenizer.ggml.tokens".to_string(),
            strings(&["a", "b", "ab"]),
        );
        metadata.insert(
            "tokenizer.ggml.merges".to_string(),
            strings(&["a b", "b a"]),
        );
        let back = read(
            source_metadata_json(&metadata, tokenizer, "t")
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(back[0].0, "tokenizer.ggml.merges");
        assert_eq!(back[0].1, Some(strings(&["a b", "b a"])));
        assert_eq!(back[1], ("tokenizer.ggml.tokens".to_string(), None));
    }
}
