//! `clipkd eval`: zero-shot classification and image-text retrieval of a CLIP checkpoint,
//! written as JSON (and printed as a short table).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use clipkd_data::dataset::IndexedDataset;
use clipkd_models::{ClipConfig, load_open_clip};
use clipkd_train::config::CsvSeparator;
use clipkd_train::eval::{
    AnnotationFormat, CaptionMode, ClassNames, EvalConfig, EvalProgress, EvalReport, EvalSuite,
    RetrievalConfig, Templates, ZeroShotConfig,
};

use super::backend::{BackendTask, DeviceSpec, Precision, dispatch};
use super::model_args::ModelArgs;

/// The annotation format named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FormatArg {
    /// By extension (.json; .csv or .tsv).
    #[default]
    Auto,
    /// COCO-Karpathy JSON.
    Json,
    /// CSV (the training format), rows grouped by image.
    Csv,
}

impl From<FormatArg> for AnnotationFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Auto => AnnotationFormat::Auto,
            FormatArg::Json => AnnotationFormat::Json,
            FormatArg::Csv => AnnotationFormat::Csv,
        }
    }
}

/// Options of `clipkd eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// The model and its weights.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Zero-shot classification on this image folder (one sub-folder per class, ImageNet
    /// layout, classes in sorted folder order).
    #[arg(long, value_name = "DIR")]
    pub imagenet: Option<PathBuf>,
    /// Class names: a file with one name per line in sorted class-folder order, or
    /// `folder<TAB>name` lines. Default: the bundled 1000 ImageNet names.
    #[arg(
        long,
        value_name = "FILE",
        requires = "imagenet",
        conflicts_with = "folder_names"
    )]
    pub classnames: Option<PathBuf>,
    /// Use the class folders' names as class names.
    #[arg(long, requires = "imagenet")]
    pub folder_names: bool,
    /// Templates: a file with one per line, `{}` where the class name goes. Default: the 80
    /// OpenAI ImageNet templates.
    #[arg(long, value_name = "FILE", requires = "imagenet")]
    pub templates: Option<PathBuf>,
    /// Image-text retrieval with this annotation file: COCO-Karpathy JSON
    /// (`[{"image": .., "caption": [..]}]`) or CSV (`title` and `filepath` columns, tab).
    #[arg(long, value_name = "JSON_OR_CSV")]
    pub retrieval: Option<PathBuf>,
    /// The folder the annotation's image paths are relative to.
    #[arg(long, value_name = "DIR", requires = "retrieval")]
    pub retrieval_root: Option<PathBuf>,
    /// The annotation format.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto, requires = "retrieval")]
    pub retrieval_format: FormatArg,
    /// CLIP-KD's retrieval: only the first caption of each image (1:1 pairs).
    #[arg(long, requires = "retrieval")]
    pub one_caption: bool,
    /// CSV annotations: the caption column.
    #[arg(long, default_value = "title", requires = "retrieval")]
    pub csv_caption_key: String,
    /// CSV annotations: the image path column.
    #[arg(long, default_value = "filepath", requires = "retrieval")]
    pub csv_img_key: String,
    /// CSV annotations: the field separator (one ASCII character; `\t` or `tab` for tab).
    #[arg(long, default_value = "\\t", requires = "retrieval")]
    pub csv_separator: CsvSeparator,
    /// Where to write the results (JSON).
    #[arg(long, short = 'o', value_name = "RESULTS.json")]
    pub output: PathBuf,
    /// Device: cpu, cuda[:N], wgpu[:N] (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Precision: f32; bf16 or f16 mixed precision (half-precision matrix products, the rest
    /// f32; CPU and CUDA); pure_bf16 or pure_f16 (every tensor; CPU and CUDA).
    #[arg(long, value_name = "f32|bf16|f16|pure_bf16|pure_f16", default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Images (and prompts or captions) per forward pass.
    #[arg(long, default_value_t = clipkd_train::eval::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Image decoding threads (0: every core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

impl EvalArgs {
    /// The evaluation settings these flags describe, with the model's preprocessing.
    pub fn eval_config(
        &self,
        preprocess_cfg: Option<serde_json::Value>,
    ) -> anyhow::Result<EvalConfig> {
        let zero_shot = self.imagenet.as_ref().map(|root| ZeroShotConfig {
            root: root.clone(),
            classnames: match (&self.classnames, self.folder_names) {
                (Some(file), _) => ClassNames::File(file.clone()),
                (None, true) => ClassNames::Folders,
                (None, false) => ClassNames::Imagenet,
            },
            templates: match &self.templates {
                Some(file) => Templates::File(file.clone()),
                None => Templates::OpenaiImagenet,
            },
        });
        let retrieval = self.retrieval.as_ref().map(|file| RetrievalConfig {
            format: self.retrieval_format.into(),
            captions: if self.one_caption {
                CaptionMode::First
            } else {
                CaptionMode::All
            },
            csv_caption_key: self.csv_caption_key.clone(),
            csv_image_key: self.csv_img_key.clone(),
            csv_separator: self.csv_separator,
            ..RetrievalConfig::new(file, self.retrieval_root.clone())
        });
        Ok(EvalConfig {
            zero_shot,
            retrieval,
            batch_size: self.batch_size,
            workers: self.workers,
            preprocess_cfg,
            ..EvalConfig::default()
        })
    }
}

/// Runs `clipkd eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.imagenet.is_some() || args.retrieval.is_some(),
        "nothing to evaluate: give --imagenet DIR (zero-shot) and/or --retrieval FILE"
    );
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    // Every input is checked before the model is loaded: files exist, lists parse, the
    // output folder exists.
    args.model.check()?;
    super::output::check_output(&args.output)?;
    let model = args.model.resolve()?;
    let eval_config = args.eval_config(model.preprocess_cfg.clone())?;
    let suite = eval_config.build().context("preparing the evaluation")?;
    if let Some(z) = &suite.zero_shot {
        eprintln!(
            "zero-shot: {} images in {} classes, {} templates",
            z.folder().len(),
            z.classnames().len(),
            z.templates().len()
        );
    }
    if let Some(r) = &suite.retrieval {
        eprintln!(
            "retrieval: {} images, {} captions{}",
            r.dataset().len(),
            r.dataset().num_texts(),
            if args.one_caption {
                " (first caption of each image used)"
            } else {
                ""
            }
        );
    }
    let task = EvalTask {
        weights: model.weights.clone(),
        config: model.config,
        suite,
    };
    let report = dispatch(args.device, args.precision, task)?;
    print!("{report}");
    write_results(&args, &model.weights, &report)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

struct EvalTask {
    weights: PathBuf,
    config: ClipConfig,
    suite: EvalSuite,
}

impl BackendTask for EvalTask {
    type Output = EvalReport;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<Self::Output> {
        // Inference only: the inner backend builds no autodiff graph and runs the model in
        // eval mode.
        let model = load_open_clip::<B::InnerBackend>(&self.weights, &self.config, &device)
            .with_context(|| format!("loading weights {}", self.weights.display()))?;
        let mut printer = ProgressPrinter::default();
        let report = self
            .suite
            .run_with_progress(&model, &device, &mut |p| printer.update(p))?;
        Ok(report)
    }
}

/// Prints `zero-shot: 5000/50000 images (123.4 images/s)` about every 10% of each stage and
/// at its end.
#[derive(Default)]
struct ProgressPrinter {
    started: Option<Instant>,
    next_tenth: usize,
}

impl ProgressPrinter {
    fn update(&mut self, p: EvalProgress) {
        if p.done == 0 {
            self.started = Some(Instant::now());
            self.next_tenth = 1;
            return;
        }
        let tenth = (p.done * 10).checked_div(p.total).unwrap_or(10);
        if tenth < self.next_tenth && p.done < p.total {
            return;
        }
        self.next_tenth = tenth + 1;
        let secs = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let unit = p.task.unit();
        eprintln!(
            "{}: {}/{} {unit} ({:.1} {unit}/s)",
            p.task,
            p.done,
            p.total,
            p.done as f64 / secs.max(1e-9)
        );
    }
}

/// Writes `{"model", "weights", "zero_shot", "retrieval", "metrics": {name: value}}`.
fn write_results(args: &EvalArgs, weights: &Path, report: &EvalReport) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(report).context("serializing the results")?;
    let object = value
        .as_object_mut()
        .expect("a struct serializes to an object");
    object.insert("model".into(), args.model.model.to_string().into());
    object.insert("weights".into(), weights.display().to_string().into());
    if let Some(tag) = &args.model.pretrained {
        object.insert("pretrained".into(), tag.clone().into());
    }
    let metrics: serde_json::Map<String, serde_json::Value> = report
        .metrics()
        .into_iter()
        .map(|(name, v)| (name, serde_json::Value::from(v)))
        .collect();
    object.insert("metrics".into(), metrics.into());
    let text = serde_json::to_string_pretty(&value).context("serializing the results")?;
    std::fs::write(&args.output, text + "\n")
        .with_context(|| format!("writing {}", args.output.display()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: EvalArgs,
    }

    fn parse(extra: &[&str]) -> Result<EvalArgs, clap::Error> {
        let base = [
            "x",
            "--model",
            "ViT-B-32",
            "--weights",
            "w.pt",
            "--output",
            "r.json",
        ];
        Cli::try_parse_from(base.iter().chain(extra)).map(|c| c.args)
    }

    #[test]
    fn flags_become_an_eval_config() {
        let args = parse(&[
            "--imagenet",
            "val",
            "--templates",
            "t.txt",
            "--retrieval",
            "coco.json",
            "--retrieval-root",
            "/coco",
            "--one-caption",
            "--batch-size",
            "8",
        ])
        .unwrap();
        let c = args.eval_config(None).unwrap();
        let z = c.zero_shot.unwrap();
        assert_eq!(z.classnames, ClassNames::Imagenet);
        assert_eq!(z.templates, Templates::File("t.txt".into()));
        let r = c.retrieval.unwrap();
        assert_eq!(r.captions, CaptionMode::First);
        assert_eq!(r.root, Some(PathBuf::from("/coco")));
        assert_eq!(r.csv_separator, CsvSeparator::TAB);
        assert_eq!(c.batch_size, 8);

        let args = parse(&["--imagenet", "val", "--folder-names"]).unwrap();
        assert_eq!(
            args.eval_config(None)
                .unwrap()
                .zero_shot
                .unwrap()
                .classnames,
            ClassNames::Folders
        );
        let args = parse(&["--retrieval", "a.csv", "--csv-separator", ","]).unwrap();
        assert_eq!(
            args.eval_config(None)
                .unwrap()
                .retrieval
                .unwrap()
                .csv_separator
                .byte(),
            b','
        );
        let e = parse(&["--retrieval", "a.csv", "--csv-separator", ",,"]).unwrap_err();
        assert!(e.to_string().contains("one ASCII character"), "{e}");
    }

    #[test]
    fn options_need_their_dataset() {
        assert!(parse(&["--classnames", "n.txt"]).is_err());
        assert!(parse(&["--one-caption"]).is_err());
        assert!(parse(&["--imagenet", "v", "--classnames", "n", "--folder-names"]).is_err());
    }
}
