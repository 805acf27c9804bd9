//! Filling a WGSL template: `{{NAME}}` placeholders replaced by values.
//!
//! Deliberately tiny: templates are real WGSL with a handful of holes
//! (workgroup size, element type, a generated expression), so a full
//! template language would only hide what the kernel is. Every placeholder
//! must be given and every value used, so a renamed hole fails loudly.

use crate::CodegenError;

/// Replaces every `{{KEY}}` in `source` by its value from `vars`.
///
/// `name` names the template in errors. Fails when a placeholder has no
/// value or a value matches no placeholder.
pub fn render(name: &str, source: &str, vars: &[(&str, String)]) -> Result<String, CodegenError> {
    let mut out = String::with_capacity(source.len() + 256);
    let mut used = vec![false; vars.len()];
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| CodegenError::Template(format!("template `{name}`: unclosed `{{{{`")))?;
        let key = after[..end].trim();
        let idx = vars.iter().position(|(k, _)| *k == key).ok_or_else(|| {
            CodegenError::Template(format!("template `{name}`: no value for `{{{{{key}}}}}`"))
        })?;
        used[idx] = true;
        out.push_str(&vars[idx].1);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(CodegenError::Template(format!(
            "template `{name}`: value `{}` matches no placeholder",
            vars[i].0
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders() {
        let s = render(
            "t",
            "a {{X}} b {{ Y }} {{X}}",
            &[("X", "1".into()), ("Y", "2".into())],
        )
        .unwrap();
        assert_eq!(s, "a 1 b 2 1");
    }

    #[test]
    fn missing_and_unused_values_are_errors() {
        let e = render("t", "{{X}}", &[]).unwrap_err().to_string();
        assert!(e.contains("no value for `{{X}}`"), "{e}");
        let e = render("t", "x", &[("X", "1".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("matches no placeholder"), "{e}");
        let e = render("t", "{{X", &[("X", "1".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unclosed"), "{e}");
    }
}
