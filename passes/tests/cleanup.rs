//! Cleanup passes, written as text in and text out.

use kiln_ir::text::{parse, print};
use kiln_passes::{pipeline, PassManager};

fn run_import_pipeline(text: &str) -> String {
    let mut g = parse(text, &Default::default()).unwrap();
    let mut pm = PassManager::new(pipeline("import").unwrap());
    pm.run(&mut g, &Default::default(), |_, _| {}, |_, _| {})
        .unwrap();
    kiln_ir::verify::verify(&g).unwrap();
    print(&g)
}

/// The exporter pattern `Reshape(x, Concat(Shape(x)[0], Shape(x)[1], 6, 4))`
/// with symbolic batch and sequence folds to a constant target.
#[test]
fn dynamic_reshape_target_folds_to_copy_dims() {
    let text = r#"graph "g" {
  input %x: f32[batch,seq,24]
  const %i0: i64[] = [0]
  const %i1: i64[] = [1]
  const %ax: i64[1] = [0]
  const %heads: i64[1] = [6]
  const %dim: i64[1] = [4]
  %s: i64[?] = Shape(start:0,end:None)(%x)
  %b: i64[?] = Gather(axis:0)(%s, %i0)
  %t: i64[?] = Gather(axis:0)(%s, %i1)
  %bu: i64[?] = Unsqueeze(axes:None)(%b, %ax)
  %tu: i64[?] = Unsqueeze(axes:None)(%t, %ax)
  %shape: i64[?] = Concat(axis:0)(%bu, %tu, %heads, %dim)
  %y: f32[?] = Reshape(allowzero:false)(%x, %shape)
  output %y
}
"#;
    let out = run_import_pipeline(text);
    assert!(out.contains("= [0, 0, 6, 4]"), "{out}");
    assert!(out.contains("%y: f32[batch,seq,6,4] = Reshape"), "{out}");
    for gone in ["Shape(", "Gather(", "Concat(", "Unsqueeze("] {
        assert!(!out.contains(gone), "{gone} survived:\n{out}");
    }
}

/// With a fixed shape the whole shape computation becomes one constant;
/// constant arithmetic is evaluated by the reference kernels.
#[test]
fn static_shapes_and_constant_arithmetic_fold() {
    let text = r#"graph "g" {
  input %x: f32[2,3]
  const %a: f32[2] = [1.0, 2.0]
  const %b: f32[2] = [0.5, 0.25]
  %s: i64[?] = Shape(start:1,end:None)(%x)
  %n: i64[?] = Size(%x)
  %c: f32[?] = Mul(%a, %b)
  %y: f32[?] = Add(%x, %x)
  output %y
  output %s
  output %n
  output %c
}
"#;
    let out = run_import_pipeline(text);
    assert!(out.contains("const %s: i64[1] = [3]"), "{out}");
    assert!(out.contains("const %n: i64[] = [6]"), "{out}");
    assert!(out.contains("const %c: f32[2] = [0.5, 0.5]"), "{out}");
    assert!(out.contains("%y: f32[2,3] = Add(%x, %x)"), "{out}");
}

/// Identity and same-dtype Cast go; a graph output keeps its name; dead
/// nodes and unused constants go.
#[test]
fn identity_cast_and_dead_code_are_removed() {
    let text = r#"graph "g" {
  input %x: f32[4]
  const %unused: f32[1] = [1.0]
  %a: f32[4] = Relu(%x)
  %b: f32[4] = Identity(%a)
  %c: f32[4] = Cast(to:F32,saturate:true)(%b)
  %dead: f32[4] = Exp(%x)
  %out: f32[4] = Identity(%c)
  output %out
}
"#;
    let out = run_import_pipeline(text);
    assert!(out.contains("%out: f32[4] = Relu(%x)"), "{out}");
    for gone in ["Identity", "Cast", "Exp", "%unused"] {
        assert!(!out.contains(gone), "{gone} survived:\n{out}");
    }
}

/// An Identity between a graph input and a graph output is the interface
/// itself and stays.
#[test]
fn identity_between_interface_values_stays() {
    let text = "graph \"g\" {\n  input %x: f32[4]\n  %y: f32[4] = Identity(%x)\n  output %y\n}\n";
    let out = run_import_pipeline(text);
    assert!(out.contains("%y: f32[4] = Identity(%x)"), "{out}");
}
