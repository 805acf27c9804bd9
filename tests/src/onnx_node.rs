//! The ONNX backend node tests, run through Kiln's importer and CPU executor.
//!
//! A case is a folder laid out as onnx's own backend test data:
//! `model.onnx` and `test_data_set_<k>/{input,output}_<i>.pb` (serialized
//! `TensorProto`s; input `i` belongs to the model's `i`-th graph input that is
//! not an initializer, output `i` to its `i`-th graph output). An optional
//! `tolerance.json` (`{"rtol": .., "atol": ..}`) overrides the default
//! tolerances, as the case's own `rtol`/`atol` do in onnx's runner.
//!
//! Outputs are compared as onnx's backend runner does: same dtype and dims;
//! floats with `|actual - expected| <= atol + rtol * |expected|` (numpy
//! `allclose`, `rtol = 1e-3`, `atol = 1e-7` unless the case says otherwise),
//! NaN equal to NaN; integers and bools exactly.

use kiln_frontends::error::ImportError;
use kiln_ir::{DType, Graph, Tensor};
use kiln_runtime::RuntimeError;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// Default relative tolerance of onnx's backend runner.
pub const DEFAULT_RTOL: f64 = 1e-3;
/// Default absolute tolerance of onnx's backend runner.
pub const DEFAULT_ATOL: f64 = 1e-7;

/// The result of one node test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every output of every data set matched.
    Passed,
    /// Wrong result, an error that is not "unsupported", or a panic.
    Failed(String),
    /// The importer or the executor said it does not support something the case uses.
    Unsupported(String),
}

impl Outcome {
    /// `passed`, `failed` or `unsupported`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::Unsupported(_) => "unsupported",
        }
    }

    /// The reason, for the outcomes that have one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Passed => None,
            Outcome::Failed(r) | Outcome::Unsupported(r) => Some(r),
        }
    }

    /// True for [`Outcome::Passed`].
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            None => f.write_str(self.kind()),
            Some(r) => write!(f, "{}: {}", self.kind(), r),
        }
    }
}

/// One case's name, op types and outcome.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case folder's name (`test_abs`).
    pub name: String,
    /// Distinct op types of the model's top-level graph (`domain::Op` outside the default domain).
    pub ops: Vec<String>,
    /// What happened.
    pub outcome: Outcome,
    /// Wall time of import + run + compare.
    pub elapsed: Duration,
}

/// Comparison tolerances.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            rtol: DEFAULT_RTOL,
            atol: DEFAULT_ATOL,
        }
    }
}

/// `$KILN_CACHE/onnx-node-tests`, where scripts/setup.sh writes the cases.
pub fn default_dir() -> PathBuf {
    crate::kiln_cache().join("onnx-node-tests")
}

/// The names of the case folders under `root` (those holding a `model.onnx`), sorted.
pub fn list_cases(root: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if entry.path().join("model.onnx").is_file() {
            if let Some(n) = entry.file_name().to_str() {
                names.push(n.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Runs the `cpu` target's pass pipeline.
fn cpu_pipeline(graph: Graph) -> Result<Graph, String> {
    let target = kiln_targets::compile::Target::by_name("cpu").map_err(|e| e.to_string())?;
    kiln_targets::compile::compile(graph, target, &Default::default(), |_, _| {}, |_, _| {})
        .map(|c| c.graph)
        .map_err(|e| e.to_string())
}

/// Whether an import error means "Kiln does not support this" rather than "Kiln got it wrong".
pub fn import_error_is_unsupported(e: &ImportError) -> bool {
    matches!(
        e,
        ImportError::UnsupportedOp { .. }
            | ImportError::UnsupportedFeature { .. }
            | ImportError::UnsupportedDType { .. }
            | ImportError::UnsupportedOpset { .. }
            | ImportError::UnsupportedFormat { .. }
            // "A value's declared type cannot be represented (unknown rank, non-tensor type)".
            | ImportError::ValueType { .. }
    )
}

fn import_outcome(what: &str, e: &ImportError) -> Outcome {
    if import_error_is_unsupported(e) {
        Outcome::Unsupported(format!("{what}: {e}"))
    } else {
        Outcome::Failed(format!("{what}: {e}"))
    }
}

fn runtime_outcome(what: &str, e: &RuntimeError) -> Outcome {
    match e {
        RuntimeError::Unsupported(_) => Outcome::Unsupported(format!("{what}: {e}")),
        _ => Outcome::Failed(format!("{what}: {e}")),
    }
}

// ---------------------------------------------------------------- panics

thread_local! {
    /// Set while a case runs on this thread: the quiet hook records the panic here.
    static CASE_PANIC: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that keeps panics inside
/// [`run_node_test`] off stderr and records their location for the
/// `Failed("panic: ..")` reason. Panics anywhere else go to the previous hook.
pub fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let recorded = CASE_PANIC.with(|c| {
                let mut c = c.borrow_mut();
                match c.as_mut() {
                    Some(slot) => {
                        let loc = info
                            .location()
                            .map(|l| format!(" at {}:{}", l.file(), l.line()))
                            .unwrap_or_default();
                        *slot = Some(format!("{}{loc}", payload_message(info.payload())));
                        true
                    }
                    None => false,
                }
            });
            if !recorded {
                previous(info);
            }
        }));
    });
}

fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

// ---------------------------------------------------------------- running

/// Which executor a node test runs on.
#[derive(Clone)]
pub enum Backend {
    /// The reference CPU executor.
    Cpu,
    /// The wgpu executor on this context's adapter, planned for its limits.
    Gpu(std::sync::Arc<kiln_runtime::gpu::GpuContext>),
}

/// Graph outputs by name, from either executor.
type Outputs = Vec<(String, Tensor)>;

/// A prepared executor.
enum Prepared {
    Cpu(Box<kiln_runtime::cpu::CpuExecutor>),
    Gpu(Box<kiln_runtime::gpu::GpuExecutor>),
}

impl Prepared {
    fn run(&self, feed: &BTreeMap<String, Tensor>) -> Result<Outputs, RuntimeError> {
        match self {
            Prepared::Cpu(x) => x.run(feed).map(|r| r.outputs),
            Prepared::Gpu(x) => x.run(feed).map(|r| r.outputs),
        }
    }
}

thread_local! {
    /// Kernel and host steps of the last case planned for the GPU on this thread.
    static GPU_STEPS: RefCell<(usize, usize)> = const { RefCell::new((0, 0)) };
}

/// The cases listed in `tests/conformance/onnx_node_pass.txt`: every one
/// must pass on the CPU executor (and, through the host fallback, on the GPU).
pub fn pass_list() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/onnx_node_pass.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Runs one case folder; never panics (a panic inside is `Failed("panic: ..")`).
pub fn run_node_test(dir: &Path) -> Outcome {
    run_node_test_on(dir, &Backend::Cpu)
}

/// Runs one case on the wgpu executor; also returns how many of its nodes
/// ran as GPU kernels and how many on the host (0, 0 when it failed before
/// planning).
pub fn run_node_test_gpu(
    dir: &Path,
    ctx: &std::sync::Arc<kiln_runtime::gpu::GpuContext>,
) -> (Outcome, usize, usize) {
    GPU_STEPS.with(|s| *s.borrow_mut() = (0, 0));
    let outcome = run_node_test_on(dir, &Backend::Gpu(ctx.clone()));
    let (k, h) = GPU_STEPS.with(|s| *s.borrow());
    (outcome, k, h)
}

/// Runs one case folder on `backend`; never panics.
pub fn run_node_test_on(dir: &Path, backend: &Backend) -> Outcome {
    CASE_PANIC.with(|c| *c.borrow_mut() = Some(None));
    let result = panic::catch_unwind(AssertUnwindSafe(|| run_inner(dir, backend)));
    let recorded = CASE_PANIC.with(|c| c.borrow_mut().take()).flatten();
    match result {
        Ok(outcome) => outcome,
        Err(payload) => Outcome::Failed(format!(
            "panic: {}",
            recorded.unwrap_or_else(|| payload_message(payload.as_ref()))
        )),
    }
}

fn run_inner(dir: &Path, backend: &Backend) -> Outcome {
    let model = dir.join("model.onnx");
    let tol = match read_tolerance(dir) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(e),
    };
    let data_sets = match data_sets(dir) {
        Ok(d) if !d.is_empty() => d,
        Ok(_) => return Outcome::Failed("no test_data_set_* folder".into()),
        Err(e) => return Outcome::Failed(e),
    };

    let graph: Graph = match kiln_frontends::onnx::import(&model) {
        Ok(g) => g,
        Err(e) => return import_outcome("import", &e),
    };
    // What `kiln optimize --target cpu` does: the case checks the pipeline
    // (folding, shape inference) as well as the executor.
    let graph = match cpu_pipeline(graph) {
        Ok(g) => g,
        Err(e) => return Outcome::Failed(format!("cpu pipeline: {e}")),
    };
    let input_names: Vec<String> = graph
        .inputs
        .iter()
        .filter(|id| !graph.constants.contains_key(id))
        .map(|&id| graph.value(id).name.clone())
        .collect();
    let output_names: Vec<String> = graph
        .outputs
        .iter()
        .map(|&id| graph.value(id).name.clone())
        .collect();

    let exec = match backend {
        Backend::Cpu => match kiln_runtime::cpu::CpuExecutor::new(graph, Default::default()) {
            Ok(x) => Prepared::Cpu(Box::new(x)),
            Err(e) => return runtime_outcome("executor", &e),
        },
        Backend::Gpu(ctx) => {
            let plan = match kiln_codegen::plan_graph(&graph, ctx.caps()) {
                Ok(p) => p,
                Err(e) => return Outcome::Failed(format!("GPU plan: {e}")),
            };
            let summary = plan.summary(&graph);
            GPU_STEPS.with(|s| {
                *s.borrow_mut() = (summary.kernel_steps, summary.host_ops.values().sum())
            });
            match kiln_runtime::gpu::GpuExecutor::new(ctx.clone(), graph, Some(plan)) {
                Ok(x) => Prepared::Gpu(Box::new(x)),
                Err(e) => return runtime_outcome("GPU executor", &e),
            }
        }
    };

    for ds in &data_sets {
        let ds_name = ds
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let inputs = match numbered_files(ds, "input_") {
            Ok(v) => v,
            Err(e) => return Outcome::Failed(format!("{ds_name}: {e}")),
        };
        let expected = match numbered_files(ds, "output_") {
            Ok(v) => v,
            Err(e) => return Outcome::Failed(format!("{ds_name}: {e}")),
        };
        if inputs.len() != input_names.len() {
            return Outcome::Failed(format!(
                "{ds_name}: {} input files for {} graph inputs {:?}",
                inputs.len(),
                input_names.len(),
                input_names
            ));
        }
        if expected.len() != output_names.len() {
            return Outcome::Failed(format!(
                "{ds_name}: {} output files for {} graph outputs {:?}",
                expected.len(),
                output_names.len(),
                output_names
            ));
        }
        let mut feed = BTreeMap::new();
        for (name, path) in input_names.iter().zip(&inputs) {
            match kiln_frontends::onnx::load_tensor_file(path) {
                Ok(t) => {
                    feed.insert(name.clone(), t);
                }
                Err(e) => {
                    return import_outcome(&format!("{ds_name}: loading {}", file_name(path)), &e)
                }
            }
        }
        let outputs = match exec.run(&feed) {
            Ok(r) => r,
            Err(e) => return runtime_outcome(&format!("{ds_name}: run"), &e),
        };
        if outputs.len() != output_names.len() {
            return Outcome::Failed(format!(
                "{ds_name}: executor returned {} outputs, graph has {}",
                outputs.len(),
                output_names.len()
            ));
        }
        for (i, (name, path)) in output_names.iter().zip(&expected).enumerate() {
            let want = match kiln_frontends::onnx::load_tensor_file(path) {
                Ok(t) => t,
                Err(e) => {
                    return import_outcome(&format!("{ds_name}: loading {}", file_name(path)), &e)
                }
            };
            // By name when the executor names its outputs as the graph does, else by position.
            let got = outputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .unwrap_or(&outputs[i].1);
            if let Err(e) = compare(got, &want, tol) {
                return Outcome::Failed(format!("{ds_name}: output {i} '{name}': {e}"));
            }
        }
    }
    Outcome::Passed
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_tolerance(dir: &Path) -> Result<Tolerance, String> {
    let path = dir.join("tolerance.json");
    if !path.exists() {
        return Ok(Tolerance::default());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let get = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
    Ok(Tolerance {
        rtol: get("rtol", DEFAULT_RTOL),
        atol: get("atol", DEFAULT_ATOL),
    })
}

/// The `test_data_set_<k>` folders, in `k` order.
fn data_sets(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut sets = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(k) = name
            .strip_prefix("test_data_set_")
            .and_then(|k| k.parse::<usize>().ok())
        {
            if entry.path().is_dir() {
                sets.push((k, entry.path()));
            }
        }
    }
    sets.sort();
    Ok(sets.into_iter().map(|(_, p)| p).collect())
}

/// `<prefix><i>.pb` for i = 0.., which must be contiguous.
fn numbered_files(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, String> {
    let mut idx = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let name = entry
            .map_err(|e| e.to_string())?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(i) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".pb"))
            .and_then(|i| i.parse::<usize>().ok())
        {
            idx.push(i);
        }
    }
    idx.sort_unstable();
    if idx.iter().enumerate().any(|(k, &i)| k != i) {
        return Err(format!(
            "{prefix}*.pb files are not numbered 0..{}: {idx:?}",
            idx.len()
        ));
    }
    Ok(idx
        .into_iter()
        .map(|i| dir.join(format!("{prefix}{i}.pb")))
        .collect())
}

// ---------------------------------------------------------------- comparing

/// Compares `actual` with `expected` as onnx's backend runner does.
pub fn compare(actual: &Tensor, expected: &Tensor, tol: Tolerance) -> Result<(), String> {
    if actual.dtype() != expected.dtype() {
        return Err(format!(
            "dtype {} (expected {})",
            actual.dtype(),
            expected.dtype()
        ));
    }
    if actual.dims() != expected.dims() {
        return Err(format!(
            "dims {:?} (expected {:?})",
            actual.dims(),
            expected.dims()
        ));
    }
    if actual.dtype().is_float() {
        let a = actual.to_f64_vec();
        let b = expected.to_f64_vec();
        let mut bad = 0usize;
        let mut first = None;
        let mut worst = 0.0f64;
        for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
            let ok = (x.is_nan() && y.is_nan())
                || x == y
                || (x.is_finite()
                    && y.is_finite()
                    && (x - y).abs() <= tol.atol + tol.rtol * y.abs());
            if !ok {
                bad += 1;
                first.get_or_insert((i, x, y));
                let d = (x - y).abs();
                if d.is_nan() || d > worst {
                    worst = d;
                }
            }
        }
        if let Some((i, x, y)) = first {
            return Err(format!(
                "{bad} of {} elements differ (rtol {}, atol {}); first at flat index {i}: got {x}, expected {y}; max |diff| {worst}",
                a.len(),
                tol.rtol,
                tol.atol
            ));
        }
        Ok(())
    } else {
        if actual.bytes() == expected.bytes() {
            return Ok(());
        }
        let a = actual.to_i64_vec();
        let b = expected.to_i64_vec();
        let bad = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        let (i, x, y) = a
            .iter()
            .zip(&b)
            .enumerate()
            .find(|(_, (x, y))| x != y)
            .map(|(i, (x, y))| (i, *x, *y))
            .unwrap_or((0, 0, 0));
        let show = |v: i64| {
            if actual.dtype() == DType::Bool {
                (v != 0).to_string()
            } else {
                v.to_string()
            }
        };
        Err(format!(
            "{bad} of {} elements differ; first at flat index {i}: got {}, expected {}",
            a.len(),
            show(x),
            show(y)
        ))
    }
}

// ---------------------------------------------------------------- many cases

/// Runs the named cases under `root` on `threads` worker threads (0: one per
/// core); returns the results sorted by name. `progress` is called after each case.
pub fn run_cases(
    root: &Path,
    names: &[String],
    threads: usize,
    progress: &(dyn Fn(&CaseResult) + Sync),
) -> Vec<CaseResult> {
    install_quiet_panic_hook();
    let threads = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    }
    .clamp(1, names.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<CaseResult>> = Mutex::new(Vec::with_capacity(names.len()));
    std::thread::scope(|s| {
        for t in 0..threads {
            let (next, results) = (&next, &results);
            std::thread::Builder::new()
                .name(format!("node-test-{t}"))
                .stack_size(64 << 20)
                .spawn_scoped(s, move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    let dir = root.join(name);
                    let start = Instant::now();
                    let outcome = if dir.join("model.onnx").is_file() {
                        run_node_test(&dir)
                    } else {
                        Outcome::Failed(format!(
                            "no such case: {}",
                            dir.join("model.onnx").display()
                        ))
                    };
                    let ops = model_op_types(&dir.join("model.onnx")).unwrap_or_default();
                    let r = CaseResult {
                        name: name.clone(),
                        ops,
                        outcome,
                        elapsed: start.elapsed(),
                    };
                    progress(&r);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                })
                .expect("spawn node-test worker");
        }
    });
    let mut v = results.into_inner().unwrap_or_else(|e| e.into_inner());
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Counts per outcome kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Passed cases.
    pub passed: usize,
    /// Failed cases.
    pub failed: usize,
    /// Unsupported cases.
    pub unsupported: usize,
}

impl Counts {
    /// Adds one outcome.
    pub fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Passed => self.passed += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Unsupported(_) => self.unsupported += 1,
        }
    }
    /// All cases.
    pub fn total(&self) -> usize {
        self.passed + self.failed + self.unsupported
    }
}

/// Totals, and counts per op type (a case counts once for every distinct op type in its model).
pub fn summarize(results: &[CaseResult]) -> (Counts, BTreeMap<String, Counts>) {
    let mut total = Counts::default();
    let mut per_op: BTreeMap<String, Counts> = BTreeMap::new();
    for r in results {
        total.add(&r.outcome);
        if r.ops.is_empty() {
            per_op
                .entry("(unknown)".into())
                .or_default()
                .add(&r.outcome);
        }
        for op in &r.ops {
            per_op.entry(op.clone()).or_default().add(&r.outcome);
        }
    }
    (total, per_op)
}

// ---------------------------------------------------------------- op types

/// The distinct op types of the model's top-level graph, sorted; ops outside
/// the default domain are written `domain::Op`. Reads the protobuf directly
/// (ModelProto.graph = 7, GraphProto.node = 1, NodeProto.op_type = 4,
/// NodeProto.domain = 7), so it works on models the importer rejects.
pub fn model_op_types(model: &Path) -> Result<Vec<String>, String> {
    let bytes = std::fs::read(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let mut ops = BTreeSet::new();
    for (field, graph) in pb_fields(&bytes)? {
        if let (7, PbValue::Bytes(graph)) = (field, graph) {
            for (field, node) in pb_fields(graph)? {
                if let (1, PbValue::Bytes(node)) = (field, node) {
                    let (mut op, mut domain) = (String::new(), String::new());
                    for (field, v) in pb_fields(node)? {
                        match (field, v) {
                            (4, PbValue::Bytes(s)) => op = String::from_utf8_lossy(s).into_owned(),
                            (7, PbValue::Bytes(s)) => {
                                domain = String::from_utf8_lossy(s).into_owned()
                            }
                            _ => {}
                        }
                    }
                    ops.insert(if domain.is_empty() || domain == "ai.onnx" {
                        op
                    } else {
                        format!("{domain}::{op}")
                    });
                }
            }
        }
    }
    Ok(ops.into_iter().collect())
}

enum PbValue<'a> {
    Scalar,
    Bytes(&'a [u8]),
}

fn pb_varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn pb_fields(buf: &[u8]) -> Result<Vec<(u64, PbValue<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = pb_varint(buf, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        let v = match wire {
            0 => {
                pb_varint(buf, &mut pos)?;
                PbValue::Scalar
            }
            1 => {
                pos += 8;
                PbValue::Scalar
            }
            2 => {
                let len =
                    usize::try_from(pb_varint(buf, &mut pos)?).map_err(|_| "length overflow")?;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or("truncated field")?;
                let s = &buf[pos..end];
                pos = end;
                PbValue::Bytes(s)
            }
            5 => {
                pos += 4;
                PbValue::Scalar
            }
            w => return Err(format!("unsupported protobuf wire type {w}")),
        };
        if pos > buf.len() {
            return Err("truncated field".into());
        }
        out.push((field, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_follows_allclose() {
        let t = |v: Vec<f32>| Tensor::from_vec(vec![v.len()], v).unwrap();
        let tol = Tolerance::default();
        assert!(compare(
            &t(vec![1.0, f32::NAN, f32::INFINITY]),
            &t(vec![1.0005, f32::NAN, f32::INFINITY]),
            tol
        )
        .is_ok());
        assert!(compare(&t(vec![1.002]), &t(vec![1.0]), tol).is_err());
        assert!(compare(&t(vec![0.0]), &t(vec![1e-8]), tol).is_ok());
        assert!(compare(&t(vec![f32::NAN]), &t(vec![1.0]), tol).is_err());
        assert!(compare(&t(vec![f32::INFINITY]), &t(vec![f32::NEG_INFINITY]), tol).is_err());
        assert!(compare(&t(vec![1.0, 2.0]), &t(vec![1.0]), tol).is_err());
        let i = |v: Vec<i64>| Tensor::from_vec(vec![v.len()], v).unwrap();
        assert!(compare(&i(vec![1, 2]), &i(vec![1, 2]), tol).is_ok());
        let e = compare(&i(vec![1, 3]), &i(vec![1, 2]), tol).unwrap_err();
        assert!(e.contains("index 1"), "{e}");
        let f64t = Tensor::from_vec(vec![2], vec![1i32, 2]).unwrap();
        assert!(compare(&f64t, &i(vec![1, 2]), tol)
            .unwrap_err()
            .contains("dtype"));
    }

    #[test]
    fn reads_op_types_from_protobuf() {
        // ModelProto { graph(7): GraphProto { node(1): NodeProto { op_type(4): "Add" },
        //                                     node(1): NodeProto { op_type(4): "Mul", domain(7): "com.x" } } }
        let node_add = [0x22, 3, b'A', b'd', b'd'];
        let mut node_mul = vec![0x22, 3, b'M', b'u', b'l', 0x3a, 5];
        node_mul.extend_from_slice(b"com.x");
        let mut graph = vec![0x0a, node_add.len() as u8];
        graph.extend_from_slice(&node_add);
        graph.extend_from_slice(&[0x0a, node_mul.len() as u8]);
        graph.extend_from_slice(&node_mul);
        let mut model = vec![0x08, 7, 0x3a, graph.len() as u8]; // ir_version = 7, then graph
        model.extend_from_slice(&graph);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.onnx");
        std::fs::write(&p, &model).unwrap();
        assert_eq!(
            model_op_types(&p).unwrap(),
            vec!["Add".to_string(), "com.x::Mul".to_string()]
        );
    }

    #[test]
    fn panics_become_failures() {
        install_quiet_panic_hook();
        CASE_PANIC.with(|c| *c.borrow_mut() = Some(None));
        let r = panic::catch_unwind(|| panic!("boom"));
        assert!(r.is_err());
        let msg = CASE_PANIC
            .with(|c| c.borrow_mut().take())
            .flatten()
            .unwrap();
        assert!(msg.starts_with("boom at "), "{msg}");
    }
}
