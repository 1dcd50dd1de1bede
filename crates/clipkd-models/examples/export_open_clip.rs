//! Writes a model as an open_clip `.safetensors` state dict, e.g. to convert a PyTorch
//! checkpoint, or to check an export with `tools/check_export.py`.
//!
//! ```text
//! cargo run -p clipkd-models --example export_open_clip -- \
//!     --config <preset name | config.json> --out model.safetensors \
//!     [--weights checkpoint.{safetensors,pt,pth,bin}] [--seed 0] [--io inputs.safetensors]
//! ```
//!
//! Without `--weights` the model is freshly initialised (seeded). With `--io` (a file holding
//! `pixels` [N,3,H,W] f32 and `tokens` [N,C] int64, optionally `keep` [N,K] int64, such as the
//! fixtures' `*_io.safetensors`), the Rust model's raw `image_features`, `text_features` (and
//! `masked_image_features`) on those inputs are written next to the export as
//! `<out>.rust_io.safetensors`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use burn_flex::Flex;
use clipkd_models::{Clip, ClipConfig, load_open_clip, save_open_clip};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

type B = Flex;

struct Args {
    config: String,
    out: PathBuf,
    weights: Option<PathBuf>,
    seed: u64,
    io: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut config = None;
    let mut out = None;
    let mut weights = None;
    let mut seed = 0;
    let mut io = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => config = Some(value()?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--weights" => weights = Some(PathBuf::from(value()?)),
            "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--io" => io = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        config: config.ok_or("--config is required")?,
        out: out.ok_or("--out is required")?,
        weights,
        seed,
        io,
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let device = Default::default();
    let config = ClipConfig::resolve(&args.config).map_err(|e| e.to_string())?;
    let model: Clip<B> = match &args.weights {
        Some(path) => load_open_clip(path, &config, &device).map_err(|e| e.to_string())?,
        None => {
            B::seed(&device, args.seed);
            config.init(&device).map_err(|e| e.to_string())?
        }
    };
    save_open_clip(&model, &args.out).map_err(|e| e.to_string())?;
    println!("wrote {}", args.out.display());
    if let Some(io) = &args.io {
        let path = write_outputs(&model, io, &args.out)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn write_outputs(model: &Clip<B>, io: &PathBuf, out: &std::path::Path) -> Result<PathBuf, String> {
    let device = Default::default();
    let bytes = std::fs::read(io).map_err(|e| format!("{}: {e}", io.display()))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", io.display()))?;
    let pixels = file.tensor("pixels").map_err(|e| format!("pixels: {e}"))?;
    let pixels: Tensor<B, 4> = Tensor::from_data(
        TensorData::from_bytes_vec(pixels.data().to_vec(), pixels.shape().to_vec(), DType::F32),
        &device,
    );
    let int_tensor = |name: &str| -> Result<Tensor<B, 2, Int>, String> {
        let t = file.tensor(name).map_err(|e| format!("{name}: {e}"))?;
        Ok(Tensor::from_data(
            TensorData::from_bytes_vec(t.data().to_vec(), t.shape().to_vec(), DType::I64),
            &device,
        ))
    };
    let mut outputs: HashMap<String, Tensor<B, 2>> = HashMap::new();
    outputs.insert(
        "image_features".into(),
        model
            .encode_image(pixels.clone())
            .map_err(|e| e.to_string())?,
    );
    outputs.insert(
        "text_features".into(),
        model
            .encode_text(int_tensor("tokens")?)
            .map_err(|e| e.to_string())?,
    );
    if file.names().contains(&"keep") && model.is_vit() {
        let masked = model
            .encode_image_masked_with_indices(pixels, int_tensor("keep")?)
            .map_err(|e| e.to_string())?;
        outputs.insert("masked_image_features".into(), masked);
    }
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = outputs
        .into_iter()
        .map(|(name, t)| {
            let shape = t.dims().to_vec();
            let values = t
                .into_data()
                .convert_dtype(DType::F32)
                .into_vec::<f32>()
                .unwrap();
            (
                name,
                shape,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let path = out.with_extension("rust_io.safetensors");
    safetensors::serialize_to_file(views, None, &path).map_err(|e| e.to_string())?;
    Ok(path)
}
