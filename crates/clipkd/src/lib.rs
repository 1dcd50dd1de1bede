//! clipkd: distill small CLIP models from large teachers.
pub use clipkd_data as data;
pub use clipkd_losses as losses;
pub use clipkd_models as models;
pub use clipkd_train as train;
