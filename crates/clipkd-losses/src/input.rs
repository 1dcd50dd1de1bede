//! The one input type every loss reads: student and teacher embeddings of a (global) batch.

use burn::tensor::{Tensor, backend::Backend};

use crate::error::LossError;
use crate::ops::{LocalRows, l2_normalize_smooth};

/// One model's embeddings of a batch: raw and L2-normalized (with [`l2_normalize_smooth`]),
/// with its logit scale.
///
/// It is also what the losses' tensor-level `forward`s take: build one from plain tensors with
/// [`Embeddings::new`] or [`Embeddings::from_log_scale`].
///
/// `logit_scale` is the *multiplier* `s = exp(logit_scale parameter)`, as open_clip's (and
/// CLIP-KD's) `forward` returns it; [`Embeddings::from_log_scale`] takes the parameter instead.
///
/// # Shapes
/// - `image`, `text`: `[N, D]`, the outputs of the projection heads, not normalized
/// - `logit_scale`: `[1]`
#[derive(Debug, Clone)]
pub struct Embeddings<B: Backend> {
    image: Tensor<B, 2>,
    text: Tensor<B, 2>,
    image_normalized: Tensor<B, 2>,
    text_normalized: Tensor<B, 2>,
    logit_scale: Tensor<B, 1>,
}

impl<B: Backend> Embeddings<B> {
    /// Embeddings from raw image and text embeddings and the logit-scale multiplier `s`.
    ///
    /// Errors if the shapes do not agree (rows, feature size, a scale of shape `[1]`) or the batch
    /// is empty.
    pub fn new(
        image: Tensor<B, 2>,
        text: Tensor<B, 2>,
        logit_scale: Tensor<B, 1>,
    ) -> Result<Self, LossError> {
        let [n, d] = image.dims();
        let [n_text, d_text] = text.dims();
        if n == 0 {
            return Err(LossError::EmptyBatch);
        }
        if n_text != n {
            return Err(LossError::BatchMismatch {
                what: "text embeddings".into(),
                expected: n,
                got: n_text,
            });
        }
        if d_text != d {
            return Err(LossError::DimMismatch {
                what: "text embeddings (must match the image embeddings)".into(),
                expected: d,
                got: d_text,
            });
        }
        if logit_scale.dims() != [1] {
            return Err(LossError::ShapeMismatch {
                what: "logit scale".into(),
                expected: vec![1],
                got: logit_scale.dims().to_vec(),
            });
        }
        Ok(Self {
            image_normalized: l2_normalize_smooth(image.clone()),
            text_normalized: l2_normalize_smooth(text.clone()),
            image,
            text,
            logit_scale,
        })
    }

    /// Like [`Embeddings::new`], from the logit-scale *parameter* `ln s` (it is exponentiated
    /// here, so its gradient flows to the parameter).
    pub fn from_log_scale(
        image: Tensor<B, 2>,
        text: Tensor<B, 2>,
        log_scale: Tensor<B, 1>,
    ) -> Result<Self, LossError> {
        Self::new(image, text, log_scale.exp())
    }

    /// Raw image embeddings `[N, D]`.
    pub fn image(&self) -> &Tensor<B, 2> {
        &self.image
    }

    /// Raw text embeddings `[N, D]`.
    pub fn text(&self) -> &Tensor<B, 2> {
        &self.text
    }

    /// L2-normalized image embeddings `[N, D]`.
    pub fn image_normalized(&self) -> &Tensor<B, 2> {
        &self.image_normalized
    }

    /// L2-normalized text embeddings `[N, D]`.
    pub fn text_normalized(&self) -> &Tensor<B, 2> {
        &self.text_normalized
    }

    /// The logit-scale multiplier `s` (`[1]`).
    pub fn logit_scale(&self) -> &Tensor<B, 1> {
        &self.logit_scale
    }

    /// Number of samples `N`.
    pub fn batch_size(&self) -> usize {
        self.image.dims()[0]
    }

    /// Embedding size `D`.
    pub fn dim(&self) -> usize {
        self.image.dims()[1]
    }

    /// The same embeddings without gradient (the teacher side of every loss).
    pub(crate) fn detach(self) -> Self {
        Self {
            image: self.image.detach(),
            text: self.text.detach(),
            image_normalized: self.image_normalized.detach(),
            text_normalized: self.text_normalized.detach(),
            logit_scale: self.logit_scale.detach(),
        }
    }
}

/// A named pair of intermediate features (e.g. a transformer block's tokens) of the student and
/// the teacher, for losses that distill more than the final embeddings.
///
/// # Shapes
/// - `student`: `[N, L_s, C_s]`, `teacher`: `[N, L_t, C_t]` (tokens, or a feature map flattened
///   to `H·W` positions); only `N` must agree, a loss maps the rest.
#[derive(Debug, Clone)]
pub struct FeaturePair<B: Backend> {
    /// Name a loss looks the pair up by, e.g. `"vision.block6"`.
    pub name: String,
    /// The student's features (carries gradient).
    pub student: Tensor<B, 3>,
    /// The teacher's features (detached).
    pub teacher: Tensor<B, 3>,
}

/// Everything a distillation loss reads, for one batch.
///
/// - `student`: the student's embeddings and logit scale (carry gradient);
/// - `teacher`: the teacher's, **detached** here, so no gradient reaches the teacher;
/// - optionally the student's image embeddings of a *masked* view (for MFD) and named
///   intermediate features (for custom losses).
///
/// # The global batch contract (several devices)
/// On one device the input is simply the batch. With several devices (data parallel), the
/// trainer all-gathers every device's student and teacher embeddings, in rank order, into the
/// global batch of `N = Σ n_r` rows, *with gradient* for the student (each device's backward
/// must send the gradient of the gathered rows back to the device that owns them, summed over
/// devices: open_clip's `gather_with_grad`), and states which rows are its own with
/// [`DistillInput::with_local_rows`]. Every loss then uses this device's rows as anchors and
/// the whole global batch as candidates (open_clip's `local_loss=True`; labels are
/// `offset + i`), and averages over the local rows only. With equal shares `n` per device,
/// the mean over devices of the per-device losses equals the single-device loss on the global
/// batch, and so do the gradients once the data-parallel all-reduce averages them. GD, whose
/// key gradients `g_k` sum over all rows, uses the whole gathered batch for its softmax and
/// keeps this device's rows of `g_p` and `g_k`. All of this is tested against the
/// single-device form on one device.
#[derive(Debug, Clone)]
pub struct DistillInput<B: Backend> {
    student: Embeddings<B>,
    teacher: Embeddings<B>,
    student_masked_image: Option<Tensor<B, 2>>,
    features: Vec<FeaturePair<B>>,
    rows: LocalRows,
}

impl<B: Backend> DistillInput<B> {
    /// An input from the student's and the teacher's embeddings of the same batch; the teacher
    /// side is detached. Errors if the batch sizes differ.
    pub fn new(student: Embeddings<B>, teacher: Embeddings<B>) -> Result<Self, LossError> {
        let n = student.batch_size();
        if teacher.batch_size() != n {
            return Err(LossError::BatchMismatch {
                what: "teacher embeddings".into(),
                expected: n,
                got: teacher.batch_size(),
            });
        }
        Ok(Self {
            student,
            teacher: teacher.detach(),
            student_masked_image: None,
            features: Vec::new(),
            rows: LocalRows::all(n),
        })
    }

    /// Adds the student's raw image embeddings of a masked view of the same images (`[N, D_s]`,
    /// e.g. from `Clip::encode_image_masked`), which MFD distills.
    pub fn with_masked_student_image(mut self, image: Tensor<B, 2>) -> Result<Self, LossError> {
        let [n, d] = image.dims();
        if n != self.batch_size() {
            return Err(LossError::BatchMismatch {
                what: "student masked-view image embeddings".into(),
                expected: self.batch_size(),
                got: n,
            });
        }
        if d != self.student.dim() {
            return Err(LossError::DimMismatch {
                what: "student masked-view image embeddings".into(),
                expected: self.student.dim(),
                got: d,
            });
        }
        self.student_masked_image = Some(image);
        Ok(self)
    }

    /// Adds a named pair of intermediate features; the teacher's are detached.
    pub fn with_features(
        mut self,
        name: impl Into<String>,
        student: Tensor<B, 3>,
        teacher: Tensor<B, 3>,
    ) -> Result<Self, LossError> {
        let name = name.into();
        for (what, t) in [("student", &student), ("teacher", &teacher)] {
            if t.dims()[0] != self.batch_size() {
                return Err(LossError::BatchMismatch {
                    what: format!("{what} features `{name}`"),
                    expected: self.batch_size(),
                    got: t.dims()[0],
                });
            }
        }
        self.features.push(FeaturePair {
            name,
            student,
            teacher: teacher.detach(),
        });
        Ok(self)
    }

    /// Declares that the embeddings are a gathered global batch of which rows
    /// `offset..offset + len` are this device's (see the type's documentation).
    pub fn with_local_rows(mut self, offset: usize, len: usize) -> Result<Self, LossError> {
        let batch = self.batch_size();
        if len == 0 || offset + len > batch {
            return Err(LossError::LocalRowsOutOfRange { offset, len, batch });
        }
        self.rows = LocalRows { offset, len };
        Ok(self)
    }

    /// The student's embeddings.
    pub fn student(&self) -> &Embeddings<B> {
        &self.student
    }

    /// The teacher's embeddings (detached).
    pub fn teacher(&self) -> &Embeddings<B> {
        &self.teacher
    }

    /// The student's raw masked-view image embeddings, if given.
    pub fn student_masked_image(&self) -> Option<&Tensor<B, 2>> {
        self.student_masked_image.as_ref()
    }

    /// All intermediate feature pairs, in the order added.
    pub fn features(&self) -> &[FeaturePair<B>] {
        &self.features
    }

    /// The intermediate feature pair named `name`, if any.
    pub fn feature(&self, name: &str) -> Option<&FeaturePair<B>> {
        self.features.iter().find(|f| f.name == name)
    }

    /// This device's rows of the (global) batch.
    pub fn rows(&self) -> LocalRows {
        self.rows
    }

    /// The (global) batch size `N`.
    pub fn batch_size(&self) -> usize {
        self.student.batch_size()
    }
}
