//! [`RunConfig::validate`]: ranges and combinations of fields, checked once before any file is
//! opened, each error naming its field.

use super::{DataKind, DeviceSpec, RunConfig, TrainMode};
use crate::error::TrainError;

impl RunConfig {
    /// Checks ranges and combinations of fields, naming the field of the first problem. Opens
    /// no file: models, data and weights are checked when the trainer is built.
    pub fn validate(&self, mode: TrainMode) -> Result<(), TrainError> {
        let d = &self.data;
        if d.kind != DataKind::Synthetic
            && d.train_data.as_deref().is_none_or(|s| s.trim().is_empty())
        {
            return Err(TrainError::config(
                "data.train_data",
                "required: CSV files (`a.csv,b.csv`) or webdataset shards (`shards/{0000..0099}.tar`)",
            ));
        }
        if d.kind == DataKind::Synthetic && d.synthetic_samples == 0 {
            return Err(TrainError::config(
                "data.synthetic_samples",
                "must be at least 1",
            ));
        }
        positive("data.batch_size", d.batch_size as u64)?;
        positive("data.prefetch", d.prefetch as u64)?;
        positive("data.shuffle_buffer", d.shuffle_buffer as u64)?;
        if !(0.0..=1.0).contains(&d.max_skipped_fraction) {
            return Err(TrainError::config(
                "data.max_skipped_fraction",
                format!("{} must be between 0 and 1", d.max_skipped_fraction),
            ));
        }
        let [lo, hi] = d.crop_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(TrainError::config(
                "data.crop_scale",
                format!("[{lo}, {hi}] must satisfy 0 < min <= max <= 1"),
            ));
        }
        if d.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(TrainError::config(
                "data.std",
                "every value must be positive",
            ));
        }
        if d.mean.iter().any(|m| !m.is_finite()) {
            return Err(TrainError::config(
                "data.mean",
                "every value must be finite",
            ));
        }
        if let Some(n) = d.train_num_samples {
            positive("data.train_num_samples", n)?;
        }
        self.check_pretrained()?;
        if mode == TrainMode::Distill
            && !self.teacher.pretrained_model().has_weights()
            && self.teacher.weights.is_none()
            && self.teacher.cache.is_none()
        {
            return Err(TrainError::config(
                "teacher.weights",
                "required for distillation: the teacher's open_clip checkpoint, a pretrained \
                 tag in teacher.pretrained (`clipkd models --pretrained`), or a teacher cache in \
                 teacher.cache (or run `clipkd train` for the no-teacher baseline)",
            ));
        }
        if mode == TrainMode::Baseline && self.teacher.cache.is_some() {
            return Err(TrainError::config(
                "teacher.cache",
                "the no-teacher baseline reads no teacher: distill from the cache instead",
            ));
        }
        if mode == TrainMode::Distill {
            if self.loss.preset.is_some() && !self.loss.terms.is_empty() {
                return Err(TrainError::config(
                    "loss.preset",
                    "give either a preset or explicit `loss.terms`, not both",
                ));
            }
            for (i, t) in self.loss.terms.iter().enumerate() {
                if !t.weight.is_finite() {
                    return Err(TrainError::config(
                        format!("loss.terms.{i}.weight"),
                        format!("{} is not finite", t.weight),
                    ));
                }
            }
        }
        let r = self.loss.mask_ratio;
        if !(0.0..1.0).contains(&r) {
            return Err(TrainError::config(
                "loss.mask_ratio",
                format!("{r} is not in [0, 1)"),
            ));
        }
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr >= 0.0) {
            return Err(TrainError::config(
                "optim.lr",
                format!("{} must be finite and >= 0", o.lr),
            ));
        }
        if let Some([b1, b2]) = o.betas
            && !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2))
        {
            return Err(TrainError::config(
                "optim.betas",
                format!("[{b1}, {b2}]: each must be in [0, 1)"),
            ));
        }
        if let Some(eps) = o.eps
            && !(eps.is_finite() && eps > 0.0)
        {
            return Err(TrainError::config(
                "optim.eps",
                format!("{eps} must be positive"),
            ));
        }
        for (field, wd) in [
            ("optim.weight_decay", o.weight_decay),
            ("optim.loss_weight_decay", o.loss_weight_decay),
        ] {
            if !(wd.is_finite() && wd >= 0.0) {
                return Err(TrainError::config(
                    field,
                    format!("{wd} must be finite and >= 0"),
                ));
            }
        }
        positive("optim.epochs", o.epochs)?;
        positive("optim.grad_accum", o.grad_accum as u64)?;
        if let Some(c) = o.grad_clip_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(TrainError::config(
                "optim.grad_clip_norm",
                format!("{c} must be positive"),
            ));
        }
        let r = &self.run;
        positive("run.keep_checkpoints", r.keep_checkpoints as u64)?;
        positive("run.log_every_steps", r.log_every_steps)?;
        if let Some(n) = r.stop_after_steps {
            positive("run.stop_after_steps", n)?;
        }
        positive("run.collective_timeout_s", r.collective_timeout_s)?;
        if let Some(other) = r.devices.iter().find(|d| !same_backend(d, &r.devices[0])) {
            return Err(TrainError::config(
                "run.devices",
                format!(
                    "`{}` and `{other}` are devices of two backends: data parallel runs on \
                     devices of one",
                    r.devices[0]
                ),
            ));
        }
        positive("run.num_nodes", r.num_nodes as u64)?;
        if r.node_rank >= r.num_nodes {
            return Err(TrainError::config(
                "run.node_rank",
                format!(
                    "{} is not a node of {} (0..{})",
                    r.node_rank, r.num_nodes, r.num_nodes
                ),
            ));
        }
        if r.num_nodes > 1 {
            for (field, value) in [
                ("run.orchestrator", &r.orchestrator),
                ("run.node_address", &r.node_address),
            ] {
                let Some(value) = value else {
                    return Err(TrainError::config(
                        field,
                        "required with several nodes (run.num_nodes > 1): `host:port`",
                    ));
                };
                host_port(value).map_err(|e| TrainError::config(field, e))?;
            }
        }
        let world = r.devices.len().max(1) * r.num_nodes;
        if !self.data.batch_size.is_multiple_of(world) {
            return Err(TrainError::config(
                "data.batch_size",
                format!(
                    "the global batch of {} cannot be split evenly over {world} devices \
                     (run.devices on each of run.num_nodes nodes): choose a multiple of {world}",
                    self.data.batch_size
                ),
            ));
        }
        if r.output_dir.as_os_str().is_empty() {
            return Err(TrainError::config("run.output_dir", "must not be empty"));
        }
        if self.eval.batch_size == 0 {
            return Err(TrainError::config("eval.batch_size", "must be at least 1"));
        }
        Ok(())
    }
}

/// `host:port` split, the port checked.
pub(crate) fn host_port(value: &str) -> Result<(&str, u16), String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("`{value}` is not `host:port`"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{value}`: `{port}` is not a port number"))?;
    if host.is_empty() {
        return Err(format!("`{value}` has no host"));
    }
    Ok((host, port))
}

/// Whether two devices belong to the same backend.
fn same_backend(a: &DeviceSpec, b: &DeviceSpec) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn positive(field: &str, value: u64) -> Result<(), TrainError> {
    if value == 0 {
        Err(TrainError::config(field, "must be at least 1"))
    } else {
        Ok(())
    }
}
