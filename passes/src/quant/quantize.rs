//! The quantization driver: calibrate, quantize every linear weight of a
//! graph, and rewrite the graph to read the packed weights.
//!
//! Calibration streams the sample through the graph once with the CPU
//! executor. Before each layer runs, an observer takes the layer's input
//! activation, accumulates its statistics, quantizes the weights that read
//! it and substitutes their dequantized values, so every later layer is
//! calibrated on the activations the quantized model will really produce
//! (GPTQ's sequential order). Only the activations of the layer being run
//! are alive at any time, and the run stops after the last layer that needs
//! them, before the output head's logits.

use super::awq::{awq_scales, AwqOptions};
use super::clip::{clip_search, ClipOptions};
use super::gptq::{gptq, prepare, GptqOptions};
use super::hessian::{output_error, InputStats};
use super::plan::{plan, Candidate, Fold, Orientation, Plan, UseKind};
use super::spec::{glob_match, Keep, Method, QuantSpec};
use half::f16;
use kiln_ir::quant::{dequantize, quantize_rtn, PackedWeight, QuantFormat};
use kiln_ir::{DType, Graph, Node, Op, Shape, Tensor, ValueType};
use kiln_runtime::cpu::{CpuExecutor, ExecOptions, Observer, ObserverAction};
use kiln_runtime::RuntimeError;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Graph metadata key recording the quantization spec of a graph.
pub const META_QUANT: &str = "kiln.quant";

/// Everything that decides how a graph is quantized.
#[derive(Clone, Debug)]
pub struct QuantConfig {
    /// Method and format of the quantized weights.
    pub spec: QuantSpec,
    /// Name patterns (`*`, `?`) of weights kept in higher precision.
    pub keep_patterns: Vec<String>,
    /// What kept weights become.
    pub keep: Keep,
    /// GPTQ's options.
    pub gptq: GptqOptions,
    /// AWQ's scale search options.
    pub awq: AwqOptions,
    /// AWQ's clip search options.
    pub clip: ClipOptions,
}

impl QuantConfig {
    /// A config with default options: the embedding and head kept as `w8`.
    pub fn new(spec: QuantSpec) -> Self {
        QuantConfig {
            spec,
            keep_patterns: super::spec::DEFAULT_KEEP
                .iter()
                .map(|s| s.to_string())
                .collect(),
            keep: Keep::Format(
                QuantFormat::new(8, None, true)
                    .unwrap_or_else(|_| unreachable!("w8 is a valid format")),
            ),
            gptq: GptqOptions::default(),
            awq: AwqOptions::default(),
            clip: ClipOptions::default(),
        }
    }
}

/// One layer's line in the report.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerReport {
    /// The weight's name.
    pub name: String,
    /// Input features.
    pub rows: usize,
    /// Output features.
    pub cols: usize,
    /// Stored format (`f32` for weights left unquantized).
    pub format: String,
    /// Method applied (`rtn`, `gptq`, `awq`, `awq+gptq`; `keep` for kept
    /// weights rounded to nearest, `none` for f32).
    pub method: String,
    /// Relative output error `‖XΔW‖² / ‖XW‖²` on the calibration sample.
    pub output_error: Option<f64>,
    /// Relative weight error `‖ΔW‖² / ‖W‖²`.
    pub weight_error: f64,
    /// AWQ's chosen exponent, when a scale was searched.
    pub awq_alpha: Option<f64>,
    /// Where AWQ's input scale was folded.
    pub folded_into: Option<String>,
    /// Stored bytes of the weight.
    pub bytes: u64,
    /// Seconds spent quantizing it (statistics included).
    pub seconds: f64,
}

/// What [`quantize_graph`] did.
#[derive(Clone, Debug)]
pub struct QuantReport {
    /// The spec, as written.
    pub spec: String,
    /// Calibration sample size `(sequences, tokens each)`, if calibrated.
    pub calibration: Option<(usize, usize)>,
    /// Every candidate weight, in graph order.
    pub layers: Vec<LayerReport>,
    /// Weight bytes before.
    pub bytes_before: u64,
    /// Weight bytes after.
    pub bytes_after: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Calibration token sequences, all of one length.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// `samples × len` token ids.
    pub sequences: Vec<Vec<u32>>,
}

/// Progress of a quantization: `done` of `total` layer inputs processed,
/// the last one named.
#[derive(Clone, Debug)]
pub struct QuantProgress {
    /// Steps finished.
    pub done: usize,
    /// Steps in all.
    pub total: usize,
    /// What was just finished.
    pub what: String,
}

/// A failure to quantize.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// The method needs calibration text and none was given.
    #[error("{0} needs calibration text (--calib FILE...)")]
    NeedsCalibration(String),
    /// The calibration sample does not fit the graph.
    #[error("calibration: {0}")]
    Calibration(String),
    /// A weight could not be quantized.
    #[error("weight `{tensor}`: {message}")]
    Weight {
        /// The weight's name.
        tensor: String,
        /// What went wrong.
        message: String,
    },
    /// Running the calibration sample failed.
    #[error("calibration run: {0}")]
    Run(#[from] RuntimeError),
    /// The graph was fused already; quantization finds weights by their
    /// plain `MatMul`, `Gemm` and `Gather` users.
    #[error("node {0} is fused: quantize before the fusion pass")]
    AlreadyFused(String),
}

/// What became of one candidate.
#[derive(Clone, Debug)]
struct Outcome {
    /// The packed weight (in the scaled space when `scales` is set); `None`
    /// when the weight stays f32.
    packed: Option<PackedWeight>,
    /// f32 weight that replaces the original (kept weights with folded columns).
    float: Option<Vec<f32>>,
    report: LayerReport,
}

/// Quantizes every linear weight of `g` in place and rewrites the graph to
/// read the packed weights; returns the per-layer report.
pub fn quantize_graph(
    g: &mut Graph,
    config: &QuantConfig,
    calibration: Option<&Calibration>,
    progress: &mut (dyn FnMut(QuantProgress) + Send),
) -> Result<QuantReport, QuantizeError> {
    let start = Instant::now();
    if let Some(n) = g
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::FusedMatMul { .. }))
    {
        return Err(QuantizeError::AlreadyFused(n.describe(g)));
    }
    let method = config.spec.method;
    if method.needs_calibration() && calibration.is_none() {
        return Err(QuantizeError::NeedsCalibration(config.spec.to_string()));
    }
    let plan = plan(g);
    let bytes_before = g.constant_bytes();
    let mut state = State::new(g, &plan, config)?;
    let total = plan.sites.len() + 1;
    progress(QuantProgress {
        done: 0,
        total,
        what: "weights rounded to nearest".into(),
    });
    state.round_upfront()?;
    progress(QuantProgress {
        done: 1,
        total,
        what: "weights rounded to nearest".into(),
    });
    if let Some(cal) = calibration {
        let inputs = calibration_inputs(g, cal)?;
        let exec = CpuExecutor::new(g.clone(), ExecOptions::default())?;
        let mut observer = Calibrator {
            state: &mut state,
            progress,
            total,
            site_at: plan
                .sites
                .iter()
                .enumerate()
                .map(|(i, s)| (s.first_node(), i))
                .collect(),
            last: plan.sites.iter().map(|s| s.first_node()).max(),
            error: None,
            done: 1,
        };
        let run = exec.run_observed(&inputs, &mut observer);
        if let Some(e) = observer.error.take() {
            return Err(e);
        }
        run?;
    }
    let layers = state.rewrite(g)?;
    g.metadata
        .insert(META_QUANT.to_string(), config.spec.to_string());
    Ok(QuantReport {
        spec: config.spec.to_string(),
        calibration: calibration
            .map(|c| (c.sequences.len(), c.sequences.first().map_or(0, Vec::len))),
        layers,
        bytes_before,
        bytes_after: g.constant_bytes(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The graph inputs for the calibration batch: `input_ids`, plus an
/// all-ones `attention_mask`, zero `token_type_ids` and `position_ids`
/// counting from 0 when the graph has them.
fn calibration_inputs(
    g: &Graph,
    cal: &Calibration,
) -> Result<BTreeMap<String, Tensor>, QuantizeError> {
    let n = cal.sequences.len();
    let len = cal.sequences.first().map_or(0, Vec::len);
    if n == 0 || len == 0 || cal.sequences.iter().any(|s| s.len() != len) {
        return Err(QuantizeError::Calibration(
            "the sample must hold at least one sequence, all of one length".into(),
        ));
    }
    let mut out = BTreeMap::new();
    for &v in &g.inputs {
        let info = g.value(v);
        let values: Vec<i64> = match info.name.as_str() {
            "input_ids" => cal.sequences.iter().flatten().map(|&t| t as i64).collect(),
            "attention_mask" => vec![1; n * len],
            "token_type_ids" => vec![0; n * len],
            "position_ids" => (0..n).flat_map(|_| 0..len as i64).collect(),
            other => {
                return Err(QuantizeError::Calibration(format!(
                    "the graph input `{other}` is not one calibration knows how to fill \
                     (input_ids, attention_mask, token_type_ids, position_ids)"
                )))
            }
        };
        let t = match info.ty.dtype {
            DType::I64 => Tensor::from_vec(vec![n, len], values),
            DType::I32 => {
                Tensor::from_vec(vec![n, len], values.iter().map(|&x| x as i32).collect())
            }
            other => {
                return Err(QuantizeError::Calibration(format!(
                    "graph input `{}` is {other}; calibration feeds token ids as i64 or i32",
                    info.name
                )))
            }
        }
        .map_err(|e| QuantizeError::Calibration(e.to_string()))?;
        out.insert(info.name.clone(), t);
    }
    Ok(out)
}

/// Per-candidate decisions and results.
struct State<'a> {
    plan: &'a Plan,
    config: &'a QuantConfig,
    /// The original f32 weights, `[in, out]`.
    weights: Vec<Vec<f32>>,
    /// What each candidate becomes: `Some(format)` quantized, `None` f32.
    formats: Vec<Option<QuantFormat>>,
    /// Whether each candidate is rounded to nearest (kept weights, `rtn`).
    rtn: Vec<bool>,
    outcomes: Vec<Option<Outcome>>,
    /// Per site: the input scale AWQ chose.
    scales: Vec<Option<Vec<f32>>>,
    /// Replacements waiting for their node: (operand, tensor).
    pending: HashMap<usize, Vec<(usize, Tensor)>>,
    /// Per site: what its fold writes into, for the report.
    fold_names: Vec<String>,
}

fn weight_err(tensor: &str, e: impl std::fmt::Display) -> QuantizeError {
    QuantizeError::Weight {
        tensor: tensor.to_string(),
        message: e.to_string(),
    }
}

/// `[out, in]` ↔ `[in, out]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = w[r * cols + c];
        }
    }
    out
}

fn relative_weight_error(w: &[f32], w_hat: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in w.iter().zip(w_hat) {
        num += (f64::from(a) - f64::from(b)).powi(2);
        den += f64::from(a).powi(2);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

impl<'a> State<'a> {
    fn new(g: &Graph, plan: &'a Plan, config: &'a QuantConfig) -> Result<Self, QuantizeError> {
        let mut weights = Vec::with_capacity(plan.candidates.len());
        let mut formats = Vec::new();
        let mut rtn = Vec::new();
        for c in &plan.candidates {
            let t = g
                .constant(c.value)
                .ok_or_else(|| weight_err(&c.name, "is not a constant"))?;
            let w = t.to_vec::<f32>().map_err(|e| weight_err(&c.name, e))?;
            weights.push(match c.orientation {
                Orientation::InOut => w,
                Orientation::OutIn => transpose(&w, c.cols, c.rows),
            });
            let kept = config.keep_patterns.iter().any(|p| glob_match(p, &c.name));
            let (format, round) = if kept {
                match config.keep {
                    Keep::Float => (None, false),
                    Keep::Format(f) => (Some(f), true),
                }
            } else {
                (Some(config.spec.format), config.spec.method == Method::Rtn)
            };
            formats.push(format);
            rtn.push(round);
        }
        Ok(State {
            plan,
            config,
            weights,
            formats,
            rtn,
            outcomes: vec![None; plan.candidates.len()],
            scales: vec![None; plan.sites.len()],
            pending: HashMap::new(),
            fold_names: plan
                .sites
                .iter()
                .map(|s| match &s.fold {
                    Some(Fold::Norm { scale, .. }) => {
                        format!("{} (norm scale)", g.value(*scale).name)
                    }
                    Some(Fold::Columns { candidate }) => {
                        format!("{} (output columns)", plan.candidates[*candidate].name)
                    }
                    None => String::new(),
                })
                .collect(),
        })
    }

    fn kept(&self, ci: usize) -> bool {
        let c = &self.plan.candidates[ci];
        self.config
            .keep_patterns
            .iter()
            .any(|p| glob_match(p, &c.name))
    }

    fn method_name(&self, ci: usize) -> String {
        match (self.formats[ci], self.kept(ci)) {
            (None, _) => "none".into(),
            (Some(_), true) => "keep".into(),
            (Some(_), false) => self.config.spec.method.name().into(),
        }
    }

    fn report(&self, ci: usize, w: &[f32], w_hat: &[f32], bytes: u64, seconds: f64) -> LayerReport {
        let c = &self.plan.candidates[ci];
        LayerReport {
            name: c.name.clone(),
            rows: c.rows,
            cols: c.cols,
            format: self.formats[ci].map_or("f32".into(), |f| f.to_string()),
            method: self.method_name(ci),
            output_error: None,
            weight_error: relative_weight_error(w, w_hat),
            awq_alpha: None,
            folded_into: None,
            bytes,
            seconds,
        }
    }

    /// Queues the dequantized weight for every node that reads it, in the
    /// graph's own orientation.
    fn substitute(&mut self, ci: usize, w_hat: &[f32]) -> Result<(), QuantizeError> {
        let c: &Candidate = &self.plan.candidates[ci];
        let (dims, values) = match c.orientation {
            Orientation::InOut => (vec![c.rows, c.cols], w_hat.to_vec()),
            Orientation::OutIn => (vec![c.cols, c.rows], transpose(w_hat, c.rows, c.cols)),
        };
        let t = Tensor::from_vec(dims, values).map_err(|e| weight_err(&c.name, e))?;
        for &(node, kind) in &c.uses {
            let pos = if kind == UseKind::Gather { 0 } else { 1 };
            self.pending.entry(node).or_default().push((pos, t.clone()));
        }
        Ok(())
    }

    /// Rounds the weights that need no calibration (kept weights and every
    /// weight under `rtn`) and queues their substitutes.
    fn round_upfront(&mut self) -> Result<(), QuantizeError> {
        for ci in 0..self.plan.candidates.len() {
            let (Some(format), true) = (self.formats[ci], self.rtn[ci]) else {
                continue;
            };
            let t0 = Instant::now();
            let c = &self.plan.candidates[ci];
            let w = &self.weights[ci];
            let packed =
                quantize_rtn(w, c.rows, c.cols, format).map_err(|e| weight_err(&c.name, e))?;
            let w_hat = dequantize(&packed);
            let report = self.report(
                ci,
                w,
                &w_hat,
                packed.byte_len() as u64,
                t0.elapsed().as_secs_f64(),
            );
            self.substitute(ci, &w_hat)?;
            self.outcomes[ci] = Some(Outcome {
                packed: Some(packed),
                float: None,
                report,
            });
        }
        Ok(())
    }

    /// Calibrates one site: statistics of its activation `x`, AWQ's scale,
    /// and the quantization of every weight that reads it. Returns the
    /// replacement of the activation when AWQ scaled it.
    fn process_site(&mut self, si: usize, x: &Tensor) -> Result<Option<Tensor>, QuantizeError> {
        let site = &self.plan.sites[si];
        let cands = site.candidates();
        let dim = self.plan.candidates[cands[0]].rows;
        let name0 = self.plan.candidates[cands[0]].name.clone();
        let xs = x
            .to_vec::<f32>()
            .map_err(|e| weight_err(&name0, format!("input activation: {e}")))?;
        if xs.len() % dim != 0 {
            return Err(weight_err(
                &name0,
                format!(
                    "input activation {:?} does not end in {dim} features",
                    x.dims()
                ),
            ));
        }
        let t0 = Instant::now();
        let mut stats = InputStats::new(dim);
        stats.add(&xs).map_err(|e| weight_err(&name0, e))?;
        let method = self.config.spec.method;
        // The weights this site quantizes with a calibrated method.
        let calibrated: Vec<usize> = cands
            .iter()
            .copied()
            .filter(|&ci| {
                self.formats[ci].is_some() && !self.rtn[ci] && self.outcomes[ci].is_none()
            })
            .collect();
        // Scaling the activation is only sound when every weight reading it
        // is requantized in the scaled space.
        let mut scales: Option<(Vec<f32>, f64)> = None;
        if method.uses_awq()
            && site.fold.is_some()
            && !calibrated.is_empty()
            && calibrated.len() == cands.len()
        {
            let group: Vec<(&[f32], usize)> = calibrated
                .iter()
                .map(|&ci| (self.weights[ci].as_slice(), self.plan.candidates[ci].cols))
                .collect();
            let found = awq_scales(&group, &stats, self.config.spec.format, &self.config.awq)
                .map_err(|e| weight_err(&name0, e))?;
            scales = Some((found.scales, found.alpha));
        }
        let scaled_stats = match &scales {
            Some((s, _)) => stats.scaled(s),
            None => stats,
        };
        let h = scaled_stats.hessian();
        let prepared = if method.uses_gptq() && !calibrated.is_empty() {
            Some(prepare(h, dim, &self.config.gptq).map_err(|e| weight_err(&name0, e))?)
        } else {
            None
        };
        let shared_seconds = t0.elapsed().as_secs_f64() / cands.len() as f64;
        for &ci in &cands {
            let t1 = Instant::now();
            let c = &self.plan.candidates[ci];
            let (rows, cols) = (c.rows, c.cols);
            let is_calibrated = calibrated.contains(&ci);
            // The weight in the scaled space: rows multiplied by s.
            let mut w = self.weights[ci].clone();
            if let (Some((s, _)), true) = (&scales, is_calibrated) {
                for (r, row) in w.chunks_exact_mut(cols).enumerate() {
                    row.iter_mut().for_each(|v| *v *= s[r]);
                }
            }
            if !is_calibrated {
                // Rounded up front or left f32: only the error is measured here.
                if let Some(o) = self.outcomes[ci].as_mut() {
                    let w_hat = o
                        .packed
                        .as_ref()
                        .map(dequantize)
                        .unwrap_or_else(|| self.weights[ci].clone());
                    o.report.output_error =
                        Some(output_error(&self.weights[ci], &w_hat, rows, cols, h));
                }
                continue;
            }
            let Some(format) = self.formats[ci] else {
                continue;
            };
            let config = self.config;
            let packed = match method {
                Method::Gptq | Method::AwqGptq => {
                    let mut opts = config.gptq;
                    if method == Method::AwqGptq {
                        opts.clip = Some(config.clip);
                    }
                    let prepared = prepared
                        .as_ref()
                        .ok_or_else(|| weight_err(&c.name, "no Hessian"))?;
                    gptq(&w, rows, cols, prepared, format, &opts)
                        .map_err(|e| weight_err(&c.name, e))?
                }
                Method::Awq => clip_search(&w, rows, cols, h, format, &config.clip)
                    .map_err(|e| weight_err(&c.name, e))?,
                Method::Rtn => {
                    quantize_rtn(&w, rows, cols, format).map_err(|e| weight_err(&c.name, e))?
                }
            };
            let w_hat_scaled = dequantize(&packed);
            let err = output_error(&w, &w_hat_scaled, rows, cols, h);
            // Back in the original space for the weight error: rows divided by s.
            let mut w_hat = w_hat_scaled.clone();
            if let Some((s, _)) = &scales {
                for (r, row) in w_hat.chunks_exact_mut(cols).enumerate() {
                    row.iter_mut().for_each(|v| *v /= s[r]);
                }
            }
            let seconds = shared_seconds + t1.elapsed().as_secs_f64();
            let mut report = self.report(
                ci,
                &self.weights[ci],
                &w_hat,
                packed.byte_len() as u64,
                seconds,
            );
            report.output_error = Some(err);
            if let Some((_, alpha)) = &scales {
                report.awq_alpha = Some(*alpha);
                report.folded_into = Some(self.fold_name(si));
            }
            // The run continues on the scaled activation, so later nodes read
            // the weight in the scaled space.
            self.substitute(ci, &w_hat_scaled)?;
            self.outcomes[ci] = Some(Outcome {
                packed: Some(packed),
                float: None,
                report,
            });
        }
        let replacement = match &scales {
            Some((s, _)) => {
                let scaled: Vec<f32> = xs
                    .chunks_exact(dim)
                    .flat_map(|row| row.iter().zip(s).map(|(v, s)| v / s))
                    .collect();
                Some(
                    Tensor::from_vec(x.dims().to_vec(), scaled)
                        .map_err(|e| weight_err(&name0, e))?,
                )
            }
            None => None,
        };
        self.scales[si] = scales.map(|(s, _)| s);
        Ok(replacement)
    }

    fn fold_name(&self, si: usize) -> String {
        self.fold_names[si].clone()
    }

    /// Writes the results into the graph: packed constants, ops that read
    /// them, and AWQ's scales folded into norms and columns.
    fn rewrite(mut self, g: &mut Graph) -> Result<Vec<LayerReport>, QuantizeError> {
        // Folds first: they change weights that are then packed.
        for si in 0..self.plan.sites.len() {
            let Some(s) = self.scales[si].clone() else {
                continue;
            };
            match self.plan.sites[si].fold.clone() {
                Some(Fold::Norm { scale, bias, .. }) => {
                    for v in std::iter::once(scale).chain(bias) {
                        let t = g
                            .constant(v)
                            .ok_or_else(|| weight_err(&g.value(v).name, "is not a constant"))?;
                        let values: Vec<f32> = t
                            .to_vec::<f32>()
                            .map_err(|e| weight_err(&g.value(v).name, e))?
                            .iter()
                            .zip(&s)
                            .map(|(a, b)| a / b)
                            .collect();
                        let nt = Tensor::from_vec(t.dims().to_vec(), values)
                            .map_err(|e| weight_err(&g.value(v).name, e))?;
                        g.constants.insert(v, nt);
                    }
                }
                Some(Fold::Columns { candidate }) => {
                    self.fold_columns(candidate, &s)?;
                }
                None => {}
            }
        }
        let mut reports = Vec::new();
        for ci in 0..self.plan.candidates.len() {
            let c = self.plan.candidates[ci].clone();
            let Some(outcome) = self.outcomes[ci].take() else {
                // Never reached by calibration (e.g. after the last site): left f32.
                let w = &self.weights[ci];
                reports.push(self.report(ci, w, w, 4 * w.len() as u64, 0.0));
                continue;
            };
            reports.push(outcome.report);
            if let Some(values) = outcome.float {
                let dims = match c.orientation {
                    Orientation::InOut => vec![c.rows, c.cols],
                    Orientation::OutIn => vec![c.cols, c.rows],
                };
                let values = match c.orientation {
                    Orientation::InOut => values,
                    Orientation::OutIn => transpose(&values, c.rows, c.cols),
                };
                let t = Tensor::from_vec(dims, values).map_err(|e| weight_err(&c.name, e))?;
                g.constants.insert(c.value, t);
                continue;
            }
            let Some(packed) = outcome.packed else {
                continue;
            };
            let t = Tensor::from_packed(&packed);
            g.value_mut(c.value).ty = ValueType {
                dtype: t.dtype(),
                shape: Shape::fixed(&[c.rows as u64, c.cols as u64]),
            };
            g.constants.insert(c.value, t);
            rewrite_uses(g, &c)?;
        }
        Ok(reports)
    }

    /// Divides the output columns of candidate `ci` by `s`.
    fn fold_columns(&mut self, ci: usize, s: &[f32]) -> Result<(), QuantizeError> {
        let c = self.plan.candidates[ci].clone();
        let Some(outcome) = self.outcomes[ci].as_mut() else {
            return Err(weight_err(
                &c.name,
                "a scale was folded into a weight that was never quantized",
            ));
        };
        match &outcome.packed {
            Some(p) => {
                // Column c decodes as (q - z)·scale, so dividing its scales
                // divides the column; only the f16 rounding of the new scale
                // differs from dividing the f32 values.
                let groups = p.groups_per_column();
                let scales: Vec<f16> = p
                    .scales()
                    .iter()
                    .enumerate()
                    .map(|(i, v)| f16::from_f32(v.to_f32() / s[i / groups]))
                    .collect();
                let np = PackedWeight::from_parts(
                    p.format(),
                    p.rows(),
                    p.cols(),
                    p.data().to_vec(),
                    scales,
                    p.zeros().map(<[u8]>::to_vec),
                )
                .map_err(|e| weight_err(&c.name, e))?;
                outcome.packed = Some(np);
            }
            None => {
                let mut w = self.weights[ci].clone();
                for row in w.chunks_exact_mut(c.cols) {
                    row.iter_mut().zip(s).for_each(|(v, s)| *v /= s);
                }
                outcome.float = Some(w);
            }
        }
        Ok(())
    }
}

/// Points the nodes that read candidate `c` at its packed form: `Gemm`
/// becomes `MatMul`; an embedding `Gather` reads columns (axis 1) and a
/// `Transpose` restores `[ids..., hidden]`.
fn rewrite_uses(g: &mut Graph, c: &Candidate) -> Result<(), QuantizeError> {
    let mut inserts: Vec<(usize, Node)> = Vec::new();
    for &(ni, kind) in &c.uses {
        match kind {
            UseKind::MatMul => {}
            UseKind::Gemm => {
                let node = &mut g.nodes[ni];
                node.op = Op::MatMul;
                node.inputs.truncate(2);
            }
            UseKind::Gather => {
                let out = g.nodes[ni].outputs[0];
                let out_ty = g.value(out).ty.clone();
                let ids = g.nodes[ni].inputs[1]
                    .ok_or_else(|| weight_err(&c.name, "Gather without indices"))?;
                let id_rank = g.value(ids).ty.shape.rank();
                let mut dims = vec![kiln_ir::Dim::Fixed(c.rows as u64)];
                dims.extend(g.value(ids).ty.shape.0.iter().cloned());
                let name = format!("{}.columns", g.value(out).name);
                let cols = g.add_value(
                    name,
                    ValueType {
                        dtype: out_ty.dtype,
                        shape: Shape(dims),
                    },
                );
                let node = &mut g.nodes[ni];
                node.op = Op::Gather { axis: 1 };
                node.outputs[0] = cols;
                let perm: Vec<i64> = (1..=id_rank as i64).chain(std::iter::once(0)).collect();
                inserts.push((
                    ni + 1,
                    Node {
                        name: String::new(),
                        op: Op::Transpose { perm: Some(perm) },
                        inputs: vec![Some(cols)],
                        outputs: vec![out],
                    },
                ));
            }
        }
    }
    inserts.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
    for (i, n) in inserts {
        g.nodes.insert(i, n);
    }
    Ok(())
}

/// The observer that calibrates during the run.
struct Calibrator<'s, 'a, 'p> {
    state: &'s mut State<'a>,
    progress: &'p mut (dyn FnMut(QuantProgress) + Send),
    total: usize,
    site_at: HashMap<usize, usize>,
    last: Option<usize>,
    error: Option<QuantizeError>,
    done: usize,
}

impl Observer for Calibrator<'_, '_, '_> {
    fn wants(&mut self, index: usize, _node: &Node) -> bool {
        self.site_at.contains_key(&index) || self.state.pending.contains_key(&index)
    }

    fn before(
        &mut self,
        index: usize,
        _node: &Node,
        operands: &[Option<Tensor>],
    ) -> Result<ObserverAction, RuntimeError> {
        let mut action = ObserverAction::default();
        if let Some(&si) = self.site_at.get(&index) {
            let pos = self.state.plan.sites[si]
                .uses
                .iter()
                .find(|u| u.1 == index)
                .map_or(0, |u| u.2);
            let Some(Some(x)) = operands.get(pos) else {
                self.error = Some(QuantizeError::Calibration(format!(
                    "node {index} has no input activation"
                )));
                action.stop = true;
                return Ok(action);
            };
            match self.state.process_site(si, x) {
                Ok(Some(scaled)) => action.replace.push((pos, scaled)),
                Ok(None) => {}
                Err(e) => {
                    self.error = Some(e);
                    action.stop = true;
                    return Ok(action);
                }
            }
            self.done += 1;
            let names: Vec<String> = self.state.plan.sites[si]
                .candidates()
                .iter()
                .map(|&ci| self.state.plan.candidates[ci].name.clone())
                .collect();
            (self.progress)(QuantProgress {
                done: self.done,
                total: self.total,
                what: names.join(", "),
            });
            if Some(index) == self.last {
                action.stop = true;
                return Ok(action);
            }
        }
        if let Some(p) = self.state.pending.remove(&index) {
            action.replace.extend(p);
        }
        Ok(action)
    }
}
