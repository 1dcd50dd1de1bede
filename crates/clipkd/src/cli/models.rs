//! `clipkd models`: the model configs clipkd bundles (open_clip's names), with their sizes.

use clap::Args;
use clipkd_models::{ClipConfig, VisionConfig, pretrained, pretrained_models, pretrained_tags};

/// Options of `clipkd models`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Any of these names is accepted wherever a model is asked for (--model,
--teacher, --student, teacher.model / student.model in a run config); an open_clip
model-config JSON file is accepted as well. `--pretrained` lists open_clip's pretrained
tags of these models (the weights on the Hugging Face Hub)."
)]
pub struct ModelsArgs {
    /// Print JSON (one object per model) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// List open_clip's pretrained tags instead (open_clip 3.3.0's, for these models): each
    /// tag's Hugging Face Hub repository, whether the weights use QuickGELU, and the image
    /// mean and std they were trained with.
    #[arg(long)]
    pub pretrained: bool,
}

/// One model's row.
#[derive(Debug)]
struct ModelRow {
    name: String,
    vision: String,
    embed_dim: usize,
    image_size: [usize; 2],
    context_length: usize,
    params: usize,
    vision_params: usize,
    text_params: usize,
}

fn vision_kind(config: &ClipConfig) -> String {
    match &config.vision {
        VisionConfig::Vit(v) => format!("ViT /{}", v.patch_size[0]),
        VisionConfig::ModifiedResNet(_) => "ModifiedResNet".to_string(),
        VisionConfig::Timm(t) => format!("timm {}", t.model_name),
    }
}

/// `151.28M`.
fn millions(n: usize) -> String {
    format!("{:.2}M", n as f64 / 1e6)
}

/// `clipkd models --pretrained`.
fn list_pretrained(json: bool) -> anyhow::Result<()> {
    if !json {
        println!("| model | tag | Hugging Face repository | QuickGELU | mean | std |");
        println!("|---|---|---|---|---|---|");
    }
    for model in pretrained_models() {
        for tag in pretrained_tags(model) {
            let p = pretrained(model, tag)?;
            if json {
                let row = serde_json::json!({
                    "model": model,
                    "tag": tag,
                    "repo": p.repo,
                    "files": p.files,
                    "quick_gelu": p.quick_gelu,
                    "mean": p.mean,
                    "std": p.std,
                    "interpolation": p.interpolation,
                    "resize_mode": p.resize_mode,
                });
                println!("{row}");
            } else {
                println!(
                    "| {model} | {tag} | {} | {} | {:?} | {:?} |",
                    p.repo,
                    if p.quick_gelu { "yes" } else { "no" },
                    p.mean,
                    p.std
                );
            }
        }
    }
    Ok(())
}

/// Runs `clipkd models`.
pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    if args.pretrained {
        return list_pretrained(args.json);
    }
    let mut rows = Vec::new();
    for name in ClipConfig::preset_names() {
        let config = ClipConfig::preset(name)?;
        let counts = config.param_counts()?;
        rows.push(ModelRow {
            name: name.to_string(),
            vision: vision_kind(&config),
            embed_dim: config.embed_dim,
            image_size: config.image_size(),
            context_length: config.context_length(),
            params: counts.total,
            vision_params: counts.vision,
            text_params: counts.text,
        });
    }
    if args.json {
        for r in &rows {
            let row = serde_json::json!({
                "name": r.name,
                "vision": r.vision,
                "embed_dim": r.embed_dim,
                "image_size": r.image_size,
                "context_length": r.context_length,
                "params": r.params,
                "vision_params": r.vision_params,
                "text_params": r.text_params,
                "pretrained": pretrained_tags(&r.name),
            });
            println!("{row}");
        }
        return Ok(());
    }
    println!(
        "| model | vision tower | embed dim | image size | context | params | vision | text | \
         pretrained tags |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {}x{} | {} | {} | {} | {} | {} |",
            r.name,
            r.vision,
            r.embed_dim,
            r.image_size[0],
            r.image_size[1],
            r.context_length,
            millions(r.params),
            millions(r.vision_params),
            millions(r.text_params),
            pretrained_tags(&r.name).len()
        );
    }
    Ok(())
}
