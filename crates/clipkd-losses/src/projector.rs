//! The loss-owned projector that maps student embeddings into the teacher's space, and the
//! batch the losses read (the input plus the aligned student features).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::error::LossError;
use crate::input::{DistillInput, Embeddings};
use crate::ops::l2_normalize_smooth;

/// Configuration of a [`Projector`].
#[derive(Config, Debug)]
pub struct ProjectorConfig {
    /// The student's embedding size `D_s`.
    pub student_dim: usize,
    /// The teacher's embedding size `D_t`.
    pub teacher_dim: usize,
    /// Whether the projections have a bias (CLIP-KD's `nn.Linear` does).
    #[config(default = true)]
    pub bias: bool,
}

impl ProjectorConfig {
    /// Creates the projector: two `Linear(D_s -> D_t)` (image, text) when the sizes differ,
    /// none (identity) when they are equal, as CLIP-KD. Initialized like PyTorch's `nn.Linear`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Projector<B> {
        if self.student_dim == self.teacher_dim {
            return Projector::identity();
        }
        let linear = || {
            eager(
                LinearConfig::new(self.student_dim, self.teacher_dim)
                    .with_bias(self.bias)
                    .init(device),
            )
        };
        Projector {
            image: Some(linear()),
            text: Some(linear()),
        }
    }
}

/// Maps the student's raw embeddings into the teacher's space: `ŝ = normalize(P s)`, one
/// `Linear(D_s -> D_t)` per modality (`P` = identity when it has none).
///
/// CLIP-KD keeps one such pair (`visual_proj`, `text_proj`) in its loss and shares it between
/// FD, ICL, GD, AFD and cross-KD; a [`LossSet`](crate::LossSet) owns one the same way, so that
/// every loss trains and reads the same projection and a checkpoint of the loss set saves it.
#[derive(Module, Debug)]
pub struct Projector<B: Backend> {
    /// Image projection (CLIP-KD's `visual_proj`), absent when `D_s == D_t`.
    pub image: Option<Linear<B>>,
    /// Text projection (CLIP-KD's `text_proj`), absent when `D_s == D_t`.
    pub text: Option<Linear<B>>,
}

impl<B: Backend> Projector<B> {
    /// No projection: `ŝ = normalize(s)`.
    pub fn identity() -> Self {
        Self {
            image: None,
            text: None,
        }
    }

    /// The student's embeddings mapped into the teacher's space: raw `P s`, normalized
    /// `ŝ = normalize(P s)`, the student's logit scale unchanged. The identity returns them as
    /// they are. This is what the tensor-level `forward` of a loss that reads aligned features
    /// (FD, MFD, GD, ICL, AFD, cross-KD) takes as its student when `D_s != D_t`.
    ///
    /// Errors if the student's embedding size is not the projector's input size.
    ///
    /// # Shapes
    /// - `student`: `[N, D_s]` embeddings -> `[N, D_t]` embeddings (`[N, D_s]` for the identity)
    pub fn project(&self, student: &Embeddings<B>) -> Result<Embeddings<B>, LossError> {
        match (&self.image, &self.text) {
            (None, None) => Ok(student.clone()),
            _ => Embeddings::new(
                self.project_image(student.image())?,
                project(self.text.as_ref(), student.text(), "text")?,
                student.logit_scale().clone(),
            ),
        }
    }

    /// Raw image embeddings mapped into the teacher's space, `P x` (not normalized), e.g. the
    /// student's masked view for MFD; the identity returns them as they are.
    ///
    /// # Shapes
    /// - `image`: `[N, D_s]` -> `[N, D_t]`
    pub fn project_image(&self, image: &Tensor<B, 2>) -> Result<Tensor<B, 2>, LossError> {
        project(self.image.as_ref(), image, "image")
    }

    /// The batch the losses read: the input plus the aligned student features.
    ///
    /// Errors if the student's embedding size is not the projector's input size.
    pub fn align(&self, input: &DistillInput<B>) -> Result<DistillBatch<B>, LossError> {
        let aligned = self.project(input.student())?;
        let masked_image_aligned = input
            .student_masked_image()
            .map(|m| self.project_image(m).map(l2_normalize_smooth))
            .transpose()?;
        Ok(DistillBatch {
            input: input.clone(),
            aligned,
            masked_image_aligned,
        })
    }
}

/// Initializes a layer's parameters now. Burn initializes lazily, and a clone of a layer that
/// was never used draws *new* random values under the same parameter ids; loss layers are
/// initialized at creation so that every copy of a loss set (e.g. one per device) is the same.
pub(crate) fn eager<B: Backend>(linear: Linear<B>) -> Linear<B> {
    let _ = linear.weight.val();
    if let Some(bias) = &linear.bias {
        let _ = bias.val();
    }
    linear
}

fn project<B: Backend>(
    linear: Option<&Linear<B>>,
    raw: &Tensor<B, 2>,
    modality: &str,
) -> Result<Tensor<B, 2>, LossError> {
    match linear {
        Some(linear) => {
            let [d_in, _] = linear.weight.dims();
            let d = raw.dims()[1];
            if d != d_in {
                return Err(LossError::DimMismatch {
                    what: format!("projector: student {modality} embeddings"),
                    expected: d_in,
                    got: d,
                });
            }
            Ok(linear.forward(raw.clone()))
        }
        None => Ok(raw.clone()),
    }
}

/// What a loss reads: the [`DistillInput`] plus the student's features aligned to the
/// teacher's space by the loss set's [`Projector`].
///
/// # Shapes
/// - `image_aligned`, `text_aligned`, `masked_image_aligned`: `[N, D_t]` (L2-normalized)
#[derive(Debug, Clone)]
pub struct DistillBatch<B: Backend> {
    input: DistillInput<B>,
    aligned: Embeddings<B>,
    masked_image_aligned: Option<Tensor<B, 2>>,
}

impl<B: Backend> DistillBatch<B> {
    /// A batch without projection (`ŝ = ū`), for losses used on their own when `D_s == D_t`
    /// or for losses that only read the student's own features (task, CRD, open_clip distill).
    pub fn unprojected(input: &DistillInput<B>) -> Self {
        Projector::identity()
            .align(input)
            .expect("the identity projector accepts any embedding size")
    }

    /// The input.
    pub fn input(&self) -> &DistillInput<B> {
        &self.input
    }

    /// The student's embeddings in the teacher's space ([`Projector::project`]): raw `P s`,
    /// normalized `ŝ`, the student's logit scale.
    pub fn student_aligned(&self) -> &Embeddings<B> {
        &self.aligned
    }

    /// `ŝ_img = normalize(P s_img)`, `[N, D_t]`.
    pub fn image_aligned(&self) -> &Tensor<B, 2> {
        self.aligned.image_normalized()
    }

    /// `ŝ_txt = normalize(P s_txt)`, `[N, D_t]`.
    pub fn text_aligned(&self) -> &Tensor<B, 2> {
        self.aligned.text_normalized()
    }

    /// `normalize(P s_img_masked)`, `[N, D_t]`, when the input has a masked view.
    pub fn masked_image_aligned(&self) -> Option<&Tensor<B, 2>> {
        self.masked_image_aligned.as_ref()
    }

    /// Checks that the aligned student features have the teacher's size (they do unless a loss
    /// that needs them is used without a projector while `D_s != D_t`).
    pub fn check_aligned(&self, loss: &str) -> Result<(), LossError> {
        let expected = self.input.teacher().dim();
        let got = self.aligned.dim();
        if got != expected {
            return Err(LossError::DimMismatch {
                what: format!(
                    "{loss}: student features aligned to the teacher's space (the student and \
                     teacher sizes differ, so the loss set needs a projector)"
                ),
                expected,
                got,
            });
        }
        Ok(())
    }
}
